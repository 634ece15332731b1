"""The webhook sender: one HTTPS POST, to a public address only, no redirects.

The host name passed the allow-list when the job was created (``diarization.service.callbacks``), but DNS decides
where it leads, and can change between a check and a connect. So the name is resolved here, every address must be
public (not private, loopback, link-local such as the metadata service at 169.254.169.254, or reserved; nor an IPv6
address that carries an IPv4 one a gateway would reach, NAT64 and 6to4, whatever that IPv4 address is), and the
connection goes to the address that was checked, with the certificate verified against the name. Networks in
`allowed_networks` are exempt (a receiver inside a VPC; the tests' receiver on 127.0.0.1), as is a CA bundle
(`ca_bundle`) the tests use for their self-signed receiver; neither is set in the template.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from diarization.errors import WebhookDeliveryError

TIMEOUT_SECONDS = 5.0
"""Per attempt: a receiver should answer at once and do its work later; retries cover a slow moment."""

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
        self.allowed_networks = tuple(allowed_networks)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        addresses = self._public_addresses(host, port)
        connection = _PinnedHttps(host, port, addresses, self.context)
        try:
            connection.request("POST", path, body=body, headers=dict(headers))
            response = connection.getresponse()
            response.read(1024)  # the answer's body does not matter; do not read an unbounded one
            return response.status
        except (OSError, http.client.HTTPException) as error:
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


class _PinnedHttps(http.client.HTTPSConnection):
    """Connects to the first of `addresses` (all checked) that answers, and verifies the certificate against `host`
    (the name in the URL)."""

    def __init__(self, host: str, port: int, addresses: list[str], context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=TIMEOUT_SECONDS, context=context)
        self.addresses = addresses
        self.tls = context

    def connect(self) -> None:
        refused: OSError = OSError(f"{self.host} has no address")
        for address in self.addresses:
            try:
                raw = socket.create_connection((address, self.port), self.timeout)
            except OSError as error:
                refused = error
                continue
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
            return
        raise refused
