"""Property-based fuzzing of the intake path: whatever arrives, the answer is a record or
a 4xx-class IntakeError; never another exception (which would be a 500).

The default run tries a few hundred cases per property; POSTBACK_HUB_FUZZ_EXAMPLES
raises it (the long run uses 10,000).
"""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postback_hub.service.errors import IntakeError
from postback_hub.service.fields import CANONICAL_FIELDS
from postback_hub.service.intake import RawCallback, intake
from postback_hub.service.secrets import Secret
from postback_hub.service.settings import AppSettings

EXAMPLES = int(os.environ.get("POSTBACK_HUB_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
APP = AppSettings(secret=Secret.of("unused"), aliases={"ts": "created_at"})
SECRET = "fuzz-secret"

keys = st.one_of(
    st.sampled_from(sorted(CANONICAL_FIELDS | {"secret", "ts", "custom"})),
    st.text(min_size=0, max_size=20),
)
values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "-1",
            "1e309",
            "NaN",
            "{}",
            "[]",
            "00000000-0000-0000-0000-000000000000",
            "99999999999999999999",
            "1700000000.5",
            "{created_at}",
            "\x00",
            "é",
            "%",
            "+",
        ]
    ),
    st.integers().map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
raw_bytes = st.binary(max_size=400)
url_chars = string.ascii_letters + string.digits + "%&=+-._~:/?#[]@!$'()*,;{}\"\\ "


def _intake(raw_query: bytes, content_type: str = "", body: bytes = b"") -> None:
    raw = RawCallback(raw_query, content_type, body, None, None, 1_700_000_000_000)
    try:
        record = intake("demo", APP, [SECRET], raw, 1024 * 1024)
    except IntakeError as exc:
        error: IntakeError | None = exc
    else:
        error = None
        # Accepted: it must be storable as is.
        assert record.to_json()
        assert record.partition_key
    if error is not None:
        assert 400 <= error.status < 500
        assert error.body()["error"]["message"]


def _query(pairs: list[tuple[str, str]]) -> bytes:
    from urllib.parse import quote

    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()


@FUZZ
@given(st.lists(st.tuples(keys, values), max_size=25))
def test_well_encoded_pairs(pairs: list[tuple[str, str]]) -> None:
    _intake(_query([("secret", SECRET), *pairs]))


@FUZZ
@given(st.lists(st.tuples(keys, values), max_size=10))
def test_plausible_callbacks_with_noise(pairs: list[tuple[str, str]]) -> None:
    base = [("secret", SECRET), ("activity_kind", "event"), ("adid", "a" * 32), ("event", "tok")]
    _intake(_query(base + pairs))


@FUZZ
@given(raw_bytes)
def test_arbitrary_query_bytes(raw: bytes) -> None:
    _intake(b"secret=" + SECRET.encode() + b"&" + raw)


@FUZZ
@given(st.text(alphabet=url_chars, max_size=300))
def test_url_like_text(text: str) -> None:
    _intake(text.encode())


@FUZZ
@given(
    raw_bytes,
    st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "",
            "application/json; charset=latin-1",
            "x/y+json",
        ]
    ),
)
def test_arbitrary_bodies(body: bytes, content_type: str) -> None:
    _intake(b"secret=" + SECRET.encode(), content_type, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(keys, json_values, max_size=12))
def test_json_objects(document: dict[str, object]) -> None:
    import json

    # The standard encoder writes what orjson cannot (integers beyond 64 bits).
    _intake(b"secret=" + SECRET.encode(), "application/json", json.dumps(document).encode())


@FUZZ
@given(st.integers(min_value=1, max_value=2000), st.sampled_from([b"a", b"%7B", b"%FF", b"x=1&"]))
def test_huge_and_repeated_values(times: int, chunk: bytes) -> None:
    _intake(b"secret=" + SECRET.encode() + b"&activity_kind=install&adid=1&v=" + chunk * times)
    _intake(b"secret=" + SECRET.encode() + b"&activity_kind=install&adid=1" + b"&city=x" * times)
