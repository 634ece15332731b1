"""Webhooks without a network: which callback URLs and receiver addresses are allowed."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

import pytest

from diarization.aws_ports.webhook_http import HttpsSender
from diarization.errors import CallbackUrlInvalidError, WebhookDeliveryError
from diarization.service.callbacks import CallbackPolicy
from diarization.service.webhooks import DeliverWebhook

SECRET = b"s3cr3t-" + b"x" * 40
POLICY = CallbackPolicy.parse("*.hooks.example.com, hooks.example.org")


class Recorded:
    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        self.states.append(state)


class Unreachable:
    """A sender that must not be called."""

    def post(self, url: str, body: bytes, headers: Any) -> int:
        raise AssertionError("sent")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://a.hooks.example.com/café", "not_ascii"),
        ("https://bücher.hooks.example.com/x", "not_ascii"),
        ("https://a.hooks.example.com/x?q=\u2028", "not_ascii"),
        ("https://evil.example\\.a.hooks.example.com/x", "backslash"),  # WHATWG: host evil.example
        ("https://hooks.example.org\\@evil.example/x", "backslash"),
        ("https://a.hooks.example.com/x\\y", "backslash"),
        ("https://a_b.hooks.example.com/x", "host"),
        ("https://*.hooks.example.com/x", "host"),
        ("https://a%2e.hooks.example.com/x", "host"),
    ],
)
def test_non_ascii_backslashes_and_odd_hosts_are_refused_when_the_job_is_created(url: str, reason: str) -> None:
    with pytest.raises(CallbackUrlInvalidError) as refused:
        POLICY.check(url)
    assert refused.value.to_dict()["details"]["reason"] == reason
    assert POLICY.check("https://xn--bcher-kva.hooks.example.com/caf%C3%A9") == (
        "https://xn--bcher-kva.hooks.example.com/caf%C3%A9"
    )


def test_a_stored_non_ascii_url_is_dead_at_once_not_retried_forever() -> None:
    """A job created before the check existed: its delivery is refused by the same policy, not sent (http.client
    would raise UnicodeEncodeError, which escaped and was retried until the queue gave up)."""
    record = Recorded()
    deliver = DeliverWebhook(POLICY, lambda: SECRET, Unreachable(), record, logging.getLogger("test"))
    message = {"job_id": "j1", "callback_url": "https://a.hooks.example.com/café", "payload": {"event_id": "e1"}}
    delivery = deliver(message, attempt=1)
    assert delivery.status == "dead" and delivery.error and "CALLBACK_URL_INVALID" in delivery.error
    assert record.states[-1]["status"] == "dead"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the metadata service
        "64:ff9b::808:808",  # NAT64 of a public address: still a translation, refused like a private range
        "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215)
        "2002:a9fe:a9fe::1",  # 6to4 of the metadata service
        "2002:808:808::1",
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "10.0.0.1",
        "169.254.169.254",
        "::1",
    ],
)
def test_translated_ipv6_addresses_are_not_public(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    resolved = [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: resolved)
    with pytest.raises(WebhookDeliveryError, match="not a public address"):
        HttpsSender()._public_addresses("a.hooks.example.com", 443)
    exempt = HttpsSender(allowed_networks=[ipaddress.ip_network(address)])  # an operator's exemption still holds
    assert exempt._public_addresses("a.hooks.example.com", 443) == [str(ipaddress.ip_address(address))]


def test_public_addresses_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 443)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:4860:4860::8888", 443, 0, 0)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: resolved)
    assert HttpsSender()._public_addresses("a.hooks.example.com", 443) == ["8.8.8.8", "2001:4860:4860::8888"]
