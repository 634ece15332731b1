"""Webhooks without a network: which callback URLs and receiver addresses are allowed; the outbox."""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Any

import pytest

from diarization.aws_ports.webhook_http import HttpsSender
from diarization.errors import CallbackUrlInvalidError, WebhookDeliveryError
from diarization.service.callbacks import CallbackPolicy
from diarization.service.locations import ObjectRef
from diarization.service.webhooks import (
    WEBHOOK_RESEND_AFTER_SECONDS,
    DeliverWebhook,
    ResendWebhooks,
    SigningKeys,
    WebhookEvents,
    event_id,
)
from support.fakes import MemoryJobs, RecordingTelemetry
from support.webhook_docs import readme_verify

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


class FlakyQueue:
    """Refuses the first `failures` deliveries (SQS unreachable), then keeps them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[dict[str, Any]] = []

    def enqueue(self, delivery: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("SQS is unreachable")
        self.sent.append(delivery)


def test_a_webhook_lost_between_the_jobs_end_and_its_queue_is_queued_by_the_sweep() -> None:
    """The job's end records the delivery (the outbox); a failed enqueue, or a crash before it, leaves it there, and
    the sweep queues it after the grace period: the same event, so a receiver that has it already deduplicates."""
    jobs, telemetry = MemoryJobs(), RecordingTelemetry()
    queue = FlakyQueue(failures=1)
    events = WebhookEvents(jobs, jobs, queue, logging.getLogger("test"), telemetry)
    resend = ResendWebhooks(jobs, events, telemetry)
    for job_id in ("lost", "crashed", "sent", "silent"):
        url = None if job_id == "silent" else "https://a.hooks.example.com/x"
        jobs.create(job_id, owner="o", callback_url=url, input=f"s3://b/{job_id}.wav")
        assert jobs.mark_running(job_id, ObjectRef("b", f"{job_id}.wav", "v1"))
    assert jobs.finish("lost", {"status": "failed", "error": {"code": "INVALID_AUDIO"}})
    events.job_ended("lost")  # SQS refuses it: counted, not raised
    assert jobs.finish("crashed", {"status": "succeeded"})  # the process dies before job_ended
    assert jobs.finish("sent", {"status": "succeeded"})
    events.job_ended("sent")
    assert jobs.finish("silent", {"status": "succeeded"})  # no callback URL: nothing to send, nothing recorded
    assert telemetry.failures == ["WEBHOOK_NOT_QUEUED"] and [d["job_id"] for d in queue.sent] == ["sent"]
    assert jobs.get("lost")["webhook"] == jobs.get("crashed")["webhook"] == {"status": "pending"}
    assert "webhook" not in jobs.get("silent")

    assert resend(time.time()) == []  # within the grace period: its own path may still be queueing it
    later = time.time() + WEBHOOK_RESEND_AFTER_SECONDS + 1
    assert resend(later) == ["crashed", "lost"]
    assert [d["job_id"] for d in queue.sent] == ["sent", "crashed", "lost"]
    assert [d["payload"]["event_id"] for d in queue.sent] == [event_id(j) for j in ("sent", "crashed", "lost")]
    assert resend(later) == []  # queued: out of the outbox
    events.job_ended("sent")  # queued twice (a redelivered sweep, a lost 2xx): the very same delivery
    assert queue.sent[-1] == queue.sent[0]


class Capturing:
    """A receiver that answers 200 and keeps what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, body: bytes, headers: Any) -> int:
        self.got.append((url, body, dict(headers)))
        return 200


def test_a_delivery_verifies_only_with_its_owners_key_and_at_its_own_url() -> None:
    """Per-owner keys derived from the master secret, the URL among the signed bytes, checked with the docs'
    snippet as written: another tenant's key fails, and so does the same body and signature replayed to another
    URL (before, one secret signed everyone's deliveries and the URL was not signed: both verified)."""
    verify, keys = readme_verify(), SigningKeys(lambda: SECRET)
    sender = Capturing()
    deliver = DeliverWebhook(POLICY, lambda: SECRET, sender, Recorded(), logging.getLogger("test"))
    alice_url, alice_other_url = "https://alice.hooks.example.com/x", "https://alice.hooks.example.com/y"
    message = {"job_id": "j1", "owner": "111:AROAALICE", "callback_url": alice_url, "payload": {"event_id": "e1"}}
    assert deliver(message, attempt=1).status == "delivered"
    ((url, body, headers),) = sender.got
    assert url == alice_url and verify(keys("111:AROAALICE"), alice_url, headers, body)
    assert not verify(keys("222:AIDABOB"), alice_url, headers, body)  # another owner's key
    assert not verify(keys("111:AROAALICE"), alice_other_url, headers, body)  # replayed to another URL
    assert not verify(SECRET.hex(), alice_url, headers, body)  # the master secret is no owner's key
    assert keys("111:AROAALICE") != keys("222:AIDABOB") and len(bytes.fromhex(keys("111:AROAALICE"))) == 32
    assert keys("111:AROAALICE") == SigningKeys(lambda: SECRET)("111:AROAALICE")  # derived, stored nowhere


def test_the_queued_delivery_names_its_owner() -> None:
    jobs, queue = MemoryJobs(), FlakyQueue(failures=0)
    events = WebhookEvents(jobs, jobs, queue, logging.getLogger("test"), RecordingTelemetry())
    jobs.create("j1", owner="111:AROAALICE", callback_url="https://alice.hooks.example.com/x")
    assert jobs.finish("j1", {"status": "succeeded"})
    events.job_ended("j1")
    assert queue.sent[0]["owner"] == "111:AROAALICE"
