"""Who may post a callback: the client's address and the app's shared secret. Pure functions.

Adjust signs nothing, so a receiver protects itself with a secret the customer
puts in the callback URL (or a bearer token) and, optionally, an allowlist of
Adjust's egress ranges.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from postback_hub.service.errors import Forbidden, Unauthorized
from postback_hub.service.settings import IPNetwork
from postback_hub.service.wire import Pairs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _within(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    # A dual-stack proxy may write an IPv4 client as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def forwarded_chain(lines: Sequence[str]) -> str | None:
    """Every ``X-Forwarded-For`` line, in order, as one comma-separated list.

    Several lines of a header mean the same as one line joining them (RFC 9110,
    section 5.3), and a proxy such as HAProxy appends its own line: reading only
    the first would believe whatever the client wrote there.
    """
    return ",".join(lines) if lines else None


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """The caller's address, reading ``X-Forwarded-For`` only through trusted proxies.

    Walk the chain from the right (the hop closest to us) and stop at the first
    address that is not one of our proxies: anything left of it was written by
    the client and cannot be believed.
    """
    address = _address(peer) if peer else None
    if address is None or not forwarded_for or not _within(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _address(hop)
        if hop_address is None:
            # A malformed hop: the last address we could vouch for is the answer.
            return address
        address = hop_address
        if not _within(address, trusted_proxies):
            return address
    return address


def check_source(address: IPAddress | None, allowed: Sequence[IPNetwork]) -> None:
    if not allowed:
        return
    if address is None or not _within(address, allowed):
        raise Forbidden("address_not_allowed", "this source address may not post callbacks")


def take_secret(
    pairs: Pairs, secret_param: str, authorization: str | None, expected: Sequence[str]
) -> Pairs:
    """Check the secret and return the pairs without it, so it never reaches Kafka.

    The secret may come as the query/body parameter ``secret_param`` or as
    ``Authorization: Bearer``; the comparison takes constant time. ``expected``
    holds the current secret and, during a rotation, the previous one.
    """
    given: list[str] = [value for key, value in pairs if key == secret_param]
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            given.append(token.strip())
    accepted = [secret.encode() for secret in expected]
    if not given:
        raise Unauthorized(
            "missing_secret",
            f"pass the app's secret as '{secret_param}' or as a bearer token",
            secret_param,
        )
    # Every given secret must match: a request carrying a wrong one is not trusted.
    # Header values may hold undecodable bytes (aiohttp keeps them as surrogates).
    matches = [
        any(hmac.compare_digest(value.encode("utf-8", "surrogateescape"), a) for a in accepted)
        for value in given
    ]
    if not all(matches):
        raise Unauthorized("invalid_secret", "the secret does not match", secret_param)
    return [(key, value) for key, value in pairs if key != secret_param]
