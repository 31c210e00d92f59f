"""Where deliveries may connect: public addresses, plus what the config's `network.allow` lists.

How it works: the channels' HTTP client (`guarded_client`) uses `GuardedBackend`, an httpcore network
backend. Its `connect_tcp` resolves the host itself, checks every address it resolves to, and connects to
the checked address, never to the name: a DNS answer that changes between a check and a connection
(rebinding) cannot move the request. Loopback, private (RFC 1918, fc00::/7), shared (100.64.0.0/10),
link-local, multicast, unspecified and reserved addresses are refused, and so are IPv4-mapped and
IPv4-compatible IPv6 forms of them, unless an allowed network contains the address. A refusal raises
`AddressRefused`, which `send_http` turns into a failure that is not retried. TLS still verifies the
URL's host name: httpcore hands the name, not the address, to `start_tls`. Proxies from the environment
are not used (a proxy would make the connection for us, to an address we did not check).
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import httpcore
import httpx

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# (network, what it is) for the error message; checked in order, the first that contains an address wins.
FORBIDDEN: tuple[tuple[Network, str], ...] = tuple(
    (ip_network(cidr), kind)
    for cidr, kind in (
        ("127.0.0.0/8", "loopback"),
        ("::1/128", "loopback"),
        ("0.0.0.0/8", "unspecified"),
        ("::/128", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("fc00::/7", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("169.254.0.0/16", "link-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
    )
)


class AddressRefused(Exception):
    """A delivery would connect to an address that is neither public nor allowed by `network.allow`."""

    def __init__(self, host: str, address: Address, kind: str) -> None:
        self.host = host
        self.address = address
        self.kind = kind
        shown = f"{host} ({address})" if host != str(address) else str(address)
        super().__init__(
            f"refused to connect to {shown}: a {kind} address; list it in the config's network.allow "
            "to deliver there"
        )


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (`127.0.0.1/32`, `10.0.0.0/8`, `::1/128`; a bare address means just it); ValueError if not."""
    return tuple(ip_network(value.strip(), strict=True) for value in values)


def _unmapped(address: Address) -> Address:
    """An IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d) IPv6 address as the IPv4 it names."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, deprecated but still routable
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def forbidden_kind(address: Address, allow: Sequence[Network]) -> str | None:
    """What kind of non-public address this is (None when it is public or allowed)."""
    candidates = {address, _unmapped(address)}
    if any(candidate in network for candidate in candidates for network in allow):
        return None
    for network, kind in FORBIDDEN:
        if any(candidate in network for candidate in candidates):
            return kind
    return None


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to checked addresses (see the module's docstring)."""

    def __init__(self, allow: Callable[[], Sequence[Network]]) -> None:
        self.allow = allow  # read at every connection: a reloaded config applies to the next one
        self._backend = httpcore.SyncBackend()

    def resolve(self, host: str, port: int) -> list[Address]:
        """Every address `host` resolves to, each checked; raises `AddressRefused` if one is refused."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses: list[Address] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ip_address(str(sockaddr[0]).split("%", 1)[0])  # without an IPv6 zone id
            if address not in addresses:
                addresses.append(address)
        allow = self.allow()
        for address in addresses:
            if (kind := forbidden_kind(address, allow)) is not None:
                raise AddressRefused(host, address, kind)
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self.resolve(host, port):
            try:
                return self._backend.connect_tcp(
                    str(address), port, timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error  # try the host's next address, as socket.create_connection would
        assert last is not None  # getaddrinfo answers at least one address or raises
        raise last

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("deliveries do not connect to Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's context (certifi's CA bundle, host names verified), made once per process and shared by every
    client: loading the bundle costs ~0.1 s, which each worker, and each test's, paid twice."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool on a `GuardedBackend`.

    httpx 0.28 has no argument for an httpcore network backend (encode/httpx#3749 proposes one), so the
    pool httpx built is replaced by the same pool on our backend; httpx's exception mapping and response
    streaming stay httpx's own. httpx is pinned in constraints.txt, and tests/channels/test_network.py
    fails if this stops taking effect.
    """

    def __init__(
        self, allow: Callable[[], Sequence[Network]], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        context = ssl_context or default_ssl_context()
        super().__init__(verify=context, trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allow),
        )


def guarded_client(
    allow: Callable[[], Sequence[Network]] = tuple, ssl_context: ssl.SSLContext | None = None
) -> httpx.Client:
    """The channels' HTTP client: no redirects followed, no environment proxies, checked addresses only.
    `ssl_context` defaults to httpx's (certifi's CA bundle, host names verified)."""
    return httpx.Client(
        transport=GuardedTransport(allow, ssl_context), follow_redirects=False, trust_env=False
    )
