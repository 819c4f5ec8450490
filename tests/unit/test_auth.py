from __future__ import annotations

import ipaddress

import pytest

from postback_hub.service.auth import check_source, client_address, take_secret
from postback_hub.service.errors import Forbidden, Unauthorized

PROXIES = [ipaddress.ip_network("10.0.0.0/8")]


def test_peer_address_without_proxies() -> None:
    assert client_address("203.0.113.7", "198.51.100.1", []) == ipaddress.ip_address("203.0.113.7")


def test_forwarded_for_is_believed_only_through_trusted_proxies() -> None:
    # The peer is our proxy; the hop left of it is the client.
    assert client_address("10.1.2.3", "198.51.100.9", PROXIES) == ipaddress.ip_address(
        "198.51.100.9"
    )
    # A client-written spoof on the left is ignored: the first untrusted hop from the right wins.
    assert client_address("10.1.2.3", "1.2.3.4, 198.51.100.9, 10.9.9.9", PROXIES) == (
        ipaddress.ip_address("198.51.100.9")
    )
    # An untrusted peer cannot set the header at all.
    assert client_address("198.51.100.9", "10.0.0.1", PROXIES) == ipaddress.ip_address(
        "198.51.100.9"
    )


def test_garbage_forwarded_for_stops_at_the_last_trusted_hop() -> None:
    assert client_address("10.1.2.3", "nonsense", PROXIES) == ipaddress.ip_address("10.1.2.3")


def test_allowlist() -> None:
    allowed = [ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32")]
    check_source(ipaddress.ip_address("203.0.113.7"), allowed)
    check_source(ipaddress.ip_address("2001:db8::1"), allowed)
    check_source(None, [])
    for bad in (ipaddress.ip_address("198.51.100.1"), None):
        with pytest.raises(Forbidden) as caught:
            check_source(bad, allowed)
        assert caught.value.status == 403


def test_secret_in_query_is_checked_and_removed() -> None:
    pairs = [("a", "1"), ("secret", "s3"), ("b", "2")]
    assert take_secret(pairs, "secret", None, ["s3"]) == [("a", "1"), ("b", "2")]


def test_bearer_secret() -> None:
    assert take_secret([("a", "1")], "secret", "Bearer s3", ["s3"]) == [("a", "1")]


@pytest.mark.parametrize(
    ("pairs", "authorization", "code"),
    [
        ([("a", "1")], None, "missing_secret"),
        ([("a", "1")], "Basic czM=", "missing_secret"),
        ([("secret", "nope")], None, "invalid_secret"),
        ([("secret", "s3")], "Bearer wrong", "invalid_secret"),
        ([("secret", "s3"), ("secret", "s4")], None, "invalid_secret"),
        ([("secret", "")], None, "invalid_secret"),
    ],
)
def test_bad_or_missing_secret(
    pairs: list[tuple[str, str]], authorization: str | None, code: str
) -> None:
    with pytest.raises(Unauthorized) as caught:
        take_secret(pairs, "secret", authorization, ["s3"])
    assert caught.value.code == code
    assert caught.value.status == 401


def test_previous_secret_is_accepted_during_rotation() -> None:
    assert take_secret([("secret", "old")], "secret", None, ["new", "old"]) == []
    with pytest.raises(Unauthorized):
        take_secret([("secret", "older")], "secret", None, ["new", "old"])


def test_undecodable_bearer_bytes_are_a_401_not_a_crash() -> None:
    with pytest.raises(Unauthorized):
        take_secret([], "secret", "Bearer s\udcff3", ["s3"])


def test_ipv4_mapped_addresses_match_ipv4_ranges() -> None:
    allowed = [ipaddress.ip_network("203.0.113.0/24")]
    check_source(ipaddress.ip_address("::ffff:203.0.113.7"), allowed)
    assert client_address("::ffff:10.1.2.3", "198.51.100.9", PROXIES) == ipaddress.ip_address(
        "198.51.100.9"
    )
