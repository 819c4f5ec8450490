"""OAuth 1.0a HMAC-SHA1 signing of X Ads API requests (RFC 5849), header-signed, no body.

:class:`OAuthSigner` owns its percent-encoding (RFC 5849 3.6, :func:`percent_encode`)
and takes from oauthlib only functions that need nothing patched: the base string
URI, the signature base string and the HMAC. Nothing of oauthlib is modified and
nothing here is shared across the process: each signer's table of pre-encoded
strings is its own, built once and never grown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

from oauthlib.common import generate_nonce, generate_timestamp
from oauthlib.oauth1.rfc5849 import signature

# The OAuth protocol's own names and values: part of every signature.
OAUTH_STRINGS = (
    "GET",
    "POST",
    "oauth_consumer_key",
    "oauth_nonce",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_token",
    "oauth_version",
    "1.0",
    "HMAC-SHA1",
)
# A signer's table holds constants, not data: past this, the caller is handing it data.
MAX_PRE_ENCODED = 256
# Base string URIs a signer keeps (one or two endpoints per app in practice).
_MAX_URIS = 16


def percent_encode(text: str) -> str:
    """RFC 5849 3.6: UTF-8, then every octet but the unreserved ``A-Z a-z 0-9 - . _ ~``
    as ``%XX`` (upper-case hex). The same as oauthlib's ``utils.escape``."""
    return quote(text, safe="~")


def encode_query(params: Mapping[str, str], encode: Callable[[str], str] = percent_encode) -> str:
    """A query string encoded as the signature base string encodes it, so ``+ / =``
    of base64 values arrive percent-encoded and the two always agree. ``encode`` may
    be a signer's :meth:`OAuthSigner.encode` (the same encoding, from its table)."""
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in params.items())


class OAuthSigner:
    """OAuth 1.0a HMAC-SHA1 signing for one set of credentials.

    Gives exactly what ``oauthlib.oauth1.Client`` gives for a header-signed request
    without a body (a test holds both to the same headers), without the client's
    per-call re-parsing of the URL and of its own header.

    ``repeated`` names non-secret strings that recur in every signature (parameter
    names, enum values, an app's store id); they are percent-encoded once, here,
    together with the OAuth protocol's strings and the consumer key and access
    token (identifiers sent in clear in every header). Everything else, device
    hashes, times, nonces and the two secrets included, is encoded per call and
    never kept. The table is at most :data:`MAX_PRE_ENCODED` strings.
    """

    # oauthlib's names for the secrets: its HMAC function reads them from the object.
    __slots__ = (
        "_encoded",
        "_uris",
        "client_key",
        "client_secret",
        "resource_owner_key",
        "resource_owner_secret",
    )

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        token: str,
        token_secret: str,
        *,
        repeated: Iterable[str] = (),
    ) -> None:
        self.client_key = consumer_key
        self.client_secret = consumer_secret
        self.resource_owner_key = token
        self.resource_owner_secret = token_secret
        strings = {*OAUTH_STRINGS, consumer_key, token, *repeated}
        strings -= {consumer_secret, token_secret, ""}
        if len(strings) > MAX_PRE_ENCODED:
            raise ValueError(
                f"{len(strings)} strings to pre-encode; a signer keeps at most {MAX_PRE_ENCODED}"
            )
        self._encoded: dict[str, str] = {text: percent_encode(text) for text in strings}
        self._uris: dict[str, str] = {}

    @property
    def pre_encoded(self) -> frozenset[str]:
        """The strings this signer encodes from its table (fixed at construction)."""
        return frozenset(self._encoded)

    def encode(self, text: str) -> str:
        """:func:`percent_encode`, from the table when ``text`` is one of its strings."""
        encoded = self._encoded.get(text)
        return encoded if encoded is not None else percent_encode(text)

    def headers(
        self,
        method: str,
        url: str,
        query: Sequence[tuple[str, str]] | None = None,
        *,
        nonce: str | None = None,
        timestamp: str | None = None,
    ) -> dict[str, str]:
        """The ``Authorization`` header for ``method url``; every query parameter is
        signed. ``query`` is the URL's query decoded, when the caller has it at hand."""
        endpoint, _, raw_query = url.partition("?")
        if query is None:
            query = signature.collect_parameters(uri_query=raw_query)
        oauth = [
            ("oauth_nonce", nonce or generate_nonce()),
            ("oauth_timestamp", timestamp or generate_timestamp()),
            ("oauth_version", "1.0"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_consumer_key", self.client_key),
        ]
        if self.resource_owner_key:
            oauth.append(("oauth_token", self.resource_owner_key))
        encode = self.encode
        # RFC 5849 3.4.1.3.2: encode, sort by name then value, join.
        pairs = sorted((encode(k), encode(v)) for k, v in (*query, *oauth))
        normalized = "&".join(f"{k}={v}" for k, v in pairs)
        base_string = signature.signature_base_string(
            method.upper(), self._base_string_uri(endpoint), normalized
        )
        digest = signature.sign_hmac_sha1_with_client(base_string, self)
        # RFC 5849 3.5.1, in oauthlib's order and spacing.
        header = ", ".join(
            f'{encode(k)}="{encode(v)}"' for k, v in (*oauth, ("oauth_signature", digest))
        )
        return {"Authorization": f"OAuth {header}"}

    def _base_string_uri(self, endpoint: str) -> str:
        uri = self._uris.get(endpoint)
        if uri is None:
            uri = signature.base_string_uri(endpoint)
            if len(self._uris) < _MAX_URIS:
                self._uris[endpoint] = uri
        return uri
