"""The webhook sender: one HTTPS POST, to a public address only, no redirects.

The host name passed the allow-list when the job was created (``diarization.service.callbacks``), but DNS decides
where it leads, and can change between a check and a connect. So the name is resolved here, every address must be
public (not private, loopback, link-local such as the metadata service at 169.254.169.254, or reserved; nor an IPv6
address that carries an IPv4 one a gateway would reach, NAT64 and 6to4, whatever that IPv4 address is), and the
connection goes to the address that was checked, with the certificate verified against the name. Networks in
`allowed_networks` are exempt (a receiver inside a VPC; the tests' receiver on 127.0.0.1), as is a CA bundle
(`ca_bundle`) the tests use for their self-signed receiver; neither is set in the template.

An attempt has one deadline (`TIMEOUT_SECONDS` from its start), not a timeout per socket operation: connecting, the
TLS handshake, every write and every read get only what is left of it, so a receiver that trickles its headers a
byte at a time or answers ``100 Continue`` without end is cut off at the deadline like one that says nothing. Only
the status line and headers are read; the body is not. Name resolution is left to the resolver's own timeouts.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from diarization.errors import WebhookDeliveryError

TIMEOUT_SECONDS = 5.0
"""Per attempt, in all (connect, TLS, send, the answer's status and headers): a receiver should answer at once and do
its work later; retries cover a slow moment."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
TRANSLATED = tuple(ipaddress.ip_network(cidr) for cidr in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16"))
"""NAT64 (well-known and local-use prefixes) and 6to4: Python counts them as global, but a gateway turns them into
the IPv4 address they embed, private ones included (64:ff9b::a9fe:a9fe is the metadata service). Refused like
private ranges."""


def is_public(address: Address) -> bool:
    """Globally reachable, and not by translation to an embedded IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_global
    return address.is_global and not any(address in network for network in TRANSLATED)


class HttpsSender:
    def __init__(self, ca_bundle: str | None = None, allowed_networks: Sequence[Network] = ()) -> None:
        self.context = ssl.create_default_context(cafile=ca_bundle)
        self.context.sslsocket_class = _DeadlineSocket
        self.allowed_networks = tuple(allowed_networks)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        addresses = self._public_addresses(host, port)
        deadline = Deadline(TIMEOUT_SECONDS)
        connection = _PinnedHttps(host, port, addresses, self.context, deadline)
        try:
            connection.request("POST", path, body=body, headers=dict(headers))
            # The status and headers are the answer; the body is not read (a slow one would only hold the attempt).
            return connection.getresponse().status
        except (OSError, http.client.HTTPException) as error:
            if deadline.passed:
                raise WebhookDeliveryError(
                    f"{host}:{port}: no complete answer within {deadline.seconds:g} s", host=host
                ) from error
            raise WebhookDeliveryError(f"{host}:{port}: {error or type(error).__name__}", host=host) from error
        finally:
            connection.close()

    def _public_addresses(self, host: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise WebhookDeliveryError(f"{host} does not resolve: {error}", host=host) from error
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:
            if not is_public(address) and not any(address in network for network in self.allowed_networks):
                raise WebhookDeliveryError(f"{host} resolves to {address}, which is not a public address.", host=host)
        return [str(address) for address in addresses]


class Deadline:
    """`seconds` from now, on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def left(self) -> float:
        """The seconds left; TimeoutError (an OSError, like a socket's) once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the attempt's {self.seconds:g} s are up")
        return left


class _DeadlineSocket(ssl.SSLSocket):
    """A TLS socket whose every read and write may wait only for what is left of its `deadline` (http.client reads
    the answer through ``recv_into`` and writes through ``sendall``, which calls ``send``)."""

    deadline: Deadline | None = None

    def _limit(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.left())

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._limit()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._limit()
        return super().recv(buflen, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self._limit()
        return super().send(data, flags)


class _PinnedHttps(http.client.HTTPSConnection):
    """Connects to the first of `addresses` (all checked) that answers, and verifies the certificate against `host`
    (the name in the URL), all within `deadline`."""

    def __init__(self, host: str, port: int, addresses: list[str], context: ssl.SSLContext, deadline: Deadline) -> None:
        super().__init__(host, port, timeout=deadline.seconds, context=context)
        self.addresses = addresses
        self.tls = context
        self.deadline = deadline

    def connect(self) -> None:
        refused: OSError = OSError(f"{self.host} has no address")
        for address in self.addresses:
            try:
                raw = socket.create_connection((address, self.port), self.deadline.left())
            except OSError as error:
                refused = error
                continue
            try:
                raw.settimeout(self.deadline.left())  # the handshake: CPython bounds all of it by this one timeout
                sock = self.tls.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
            if isinstance(sock, _DeadlineSocket):
                sock.deadline = self.deadline
            self.sock = sock
            return
        raise refused
