"""Which callback URLs a job may name: the deployment's allow-list of webhook hosts.

The function POSTs to these URLs from inside AWS, so a URL is a request the caller makes the function send
(server-side request forgery). Only names on the operator's allow-list are accepted, over HTTPS on port 443
(another port only where the allow-list names it). IP literals are refused outright: the allow-list is of names,
and a literal such as ``169.254.169.254`` (the instance metadata service) or ``10.0.0.1`` would reach inside the
network. A name can still resolve to such an address; the sender checks the resolved address at delivery time
(see ``diarization.aws_ports.webhook_http``). User info is refused (it would travel as credentials, and
``https://allowed.example@evil.example`` is a classic allow-list bypass), and so are fragments, control
characters, backslashes (parsers disagree on them: WHATWG reads ``https://evil.example\\.a.allowed.example/`` as the
host ``evil.example``), characters outside ASCII (send international names IDNA-encoded, ``xn--...``, and paths
percent-encoded), host names that are not letters, digits, hyphens and dots, and URLs over 2,048 characters.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from diarization.errors import (
    CallbackHostNotAllowedError,
    CallbackUrlInvalidError,
    ConfigurationError,
    WebhooksDisabledError,
)

MAX_CALLBACK_URL_CHARS = 2048
HTTPS_PORT = 443
HOST_LABELS = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
"""What a callback URL's host may be (lower-cased): labels of letters, digits and hyphens, no wildcard."""


@dataclass(frozen=True)
class AllowedHost:
    """`host` exactly, or any subdomain of `suffix` (`*.example.com`: `a.example.com`, not `example.com`)."""

    name: str
    wildcard: bool
    port: int = HTTPS_PORT

    def matches(self, host: str, port: int) -> bool:
        if port != self.port:
            return False
        return host.endswith("." + self.name) if self.wildcard else host == self.name


@dataclass(frozen=True)
class CallbackPolicy:
    allowed: tuple[AllowedHost, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.allowed)

    @classmethod
    def parse(cls, value: str | None, setting: str = "WEBHOOK_ALLOWED_HOSTS") -> CallbackPolicy:
        """Comma-separated `host`, `*.suffix`, optionally `:port`; empty: webhooks are disabled."""
        allowed = []
        for raw in (value or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            name, _, port_text = entry.partition(":")
            port = HTTPS_PORT
            if port_text:
                if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ConfigurationError(f"{setting}: {raw.strip()!r} has an invalid port.", setting=setting)
                port = int(port_text)
            if not HOST_LABELS.match(name) or _is_ip(name) or name.count(".") < (2 if name.startswith("*.") else 0):
                raise ConfigurationError(
                    f"{setting}: {raw.strip()!r} is not a host name or '*.' + a domain with at least two labels "
                    "(IP addresses are not allowed: see README, Webhooks).",
                    setting=setting,
                )
            wildcard = name.startswith("*.")
            allowed.append(AllowedHost(name.removeprefix("*."), wildcard, port))
        return cls(tuple(allowed))

    def check(self, url: Any) -> str:
        """The URL, if a job may name it; otherwise the error a caller sees (400)."""
        if not self.enabled:
            raise WebhooksDisabledError(
                "This deployment sends no webhooks (its WebhookAllowedHosts parameter is empty); "
                "poll GET /jobs/{job_id} instead."
            )
        if not isinstance(url, str):
            raise CallbackUrlInvalidError('"callback_url" must be a string.', reason="not_a_string")
        if len(url) > MAX_CALLBACK_URL_CHARS:
            raise CallbackUrlInvalidError(
                f'"callback_url" is longer than {MAX_CALLBACK_URL_CHARS} characters.', reason="too_long"
            )
        _check_characters(url)
        try:
            parts = urlsplit(url)
            port = parts.port or HTTPS_PORT
        except ValueError as error:
            raise CallbackUrlInvalidError(f'"callback_url" is not a valid URL: {error}.', reason="malformed") from error
        if parts.scheme.lower() != "https":
            raise CallbackUrlInvalidError('"callback_url" must start with https://.', reason="not_https")
        if "@" in parts.netloc:
            raise CallbackUrlInvalidError('"callback_url" must not contain user info (user@).', reason="userinfo")
        if parts.fragment or url.endswith("#"):
            raise CallbackUrlInvalidError('"callback_url" must not contain a fragment (#).', reason="fragment")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise CallbackUrlInvalidError('"callback_url" has no host.', reason="no_host")
        if _is_ip(host) or host.isdigit():
            raise CallbackUrlInvalidError(
                '"callback_url" must name a host, not an IP address.', reason="ip_address", host=host
            )
        if not HOST_NAME.match(host):
            raise CallbackUrlInvalidError(
                '"callback_url" has a host that is not a DNS name (letters, digits, hyphens and dots).',
                reason="host",
                host=host,
            )
        if not any(entry.matches(host, port) for entry in self.allowed):
            raise CallbackHostNotAllowedError(
                f"{host}:{port} is not on this deployment's webhook allow-list (port 443 unless the list names "
                "another).",
                host=host,
                port=port,
            )
        return url


def _check_characters(url: str) -> None:
    """Printable ASCII only, no backslash: anything else is refused when the job is created, never at delivery (where
    a non-ASCII URL cannot be sent at all)."""
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise CallbackUrlInvalidError('"callback_url" contains spaces or control characters.', reason="characters")
    if any(ord(char) > 127 for char in url):
        raise CallbackUrlInvalidError(
            '"callback_url" must be ASCII: IDNA-encode an international host name (xn--...) and percent-encode '
            "the path.",
            reason="not_ascii",
        )
    if "\\" in url:
        raise CallbackUrlInvalidError('"callback_url" must not contain a backslash.', reason="backslash")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
