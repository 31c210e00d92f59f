"""The network guard against a real HTTP receiver on 127.0.0.1: refused without `network.allow`, delivered
with it, after DNS resolution (`localhost`), whatever the address's spelling."""

from __future__ import annotations

import ssl
from ipaddress import ip_address

import httpx
import pytest
import trustme

from funnels.channels.network import (
    AddressRefused,
    GuardedBackend,
    forbidden_kind,
    guarded_client,
    parse_networks,
)
from funnels.channels.webhook import WebhookArgs, WebhookSettings, deliver_webhook
from tests.receivers import HttpReceiver, delivery_request, local_http

TOKEN = "Bearer internal-admin-token"


def send(url: str, allow: list[str]) -> tuple[bool, bool, str | None]:
    networks = parse_networks(allow)
    with guarded_client(lambda: networks) as http:
        args = WebhookArgs(url=url, headers={"Authorization": TOKEN})
        result = deliver_webhook(args, WebhookSettings(), delivery_request(http))
    return result.ok, result.retryable, result.error


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "2130706433"],  # the last two: 127.0.0.1
)
def test_a_loopback_receiver_is_refused_without_the_allow_list(
    http_receiver: HttpReceiver, host: str
) -> None:
    port = http_receiver.url.rsplit(":", 1)[1]
    ok, retryable, error = send(f"http://{host}:{port}/internal-admin", allow=[])
    assert not ok and not retryable  # the job ends dead: the address will not change on a retry
    assert error is not None and "refused to connect to" in error and "a loopback address" in error
    assert "127.0.0.1" in error and "network.allow" in error
    assert http_receiver.requests == []  # nothing reached it, the Authorization header least of all


def test_with_the_allow_list_it_is_delivered(http_receiver: HttpReceiver) -> None:
    ok, _retryable, error = send(f"{http_receiver.url}/internal-admin", allow=["127.0.0.1/32"])
    assert ok and error is None
    (request,) = http_receiver.requests
    assert request.path == "/internal-admin" and request.headers["authorization"] == TOKEN


def test_an_allow_list_for_other_networks_does_not_open_loopback(http_receiver: HttpReceiver) -> None:
    ok, _retryable, error = send(f"{http_receiver.url}/x", allow=["10.0.0.0/8", "::1/128"])
    assert not ok and error is not None and "loopback" in error
    assert http_receiver.requests == []


def test_the_receivers_client_is_guarded_too(http_receiver: HttpReceiver) -> None:
    with local_http() as http:  # what the channel tests use: loopback allowed, nothing else
        assert http.get(f"{http_receiver.url}/ok").status_code == 200
        with pytest.raises(AddressRefused, match=r"10\.0\.0\.1"):
            GuardedBackend(lambda: parse_networks(["127.0.0.1/32"])).resolve("10.0.0.1", 80)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "reserved"),
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("172.32.0.1", None),
    ],
)
def test_what_is_refused(address: str, kind: str | None) -> None:
    assert forbidden_kind(ip_address(address), ()) == kind


def test_the_allow_list_also_covers_mapped_forms() -> None:
    allowed = parse_networks(["127.0.0.1/32"])
    assert forbidden_kind(ip_address("::ffff:127.0.0.1"), allowed) is None
    assert forbidden_kind(ip_address("127.0.0.2"), allowed) == "loopback"


def test_the_checked_address_is_the_one_connected_to() -> None:
    # `resolve` answers addresses, not names: connect_tcp connects to what it checked.
    backend = GuardedBackend(lambda: parse_networks(["127.0.0.0/8", "::1/128"]))
    assert {str(address) for address in backend.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
    with pytest.raises(AddressRefused):
        GuardedBackend(tuple).resolve("localhost", 80)


def test_tls_verifies_the_url_host_name_while_connecting_to_the_checked_address() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with HttpReceiver() as receiver:
        receiver.wrap_tls(server_context)
        port = receiver.url.rsplit(":", 1)[1]
        allowed = parse_networks(["127.0.0.1/32", "::1/128"])
        with guarded_client(lambda: allowed, client_context) as http:
            # Connected to 127.0.0.1 (checked), the certificate verified for "localhost" (the URL's host).
            assert http.get(f"https://localhost:{port}/tls").status_code == 200
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                http.get(f"https://127.0.0.1:{port}/tls")  # a certificate for localhost, not this address
        with guarded_client(lambda: allowed) as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
            http.get(f"https://localhost:{port}/tls")  # the default context does not trust the test CA
        assert [request.path for request in receiver.requests] == ["/tls"]
