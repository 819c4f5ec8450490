"""The receiver's privacy step: drop or keyed-hash personal fields of a record. Pure.

Runs in intake after normalisation, so the record that reaches Kafka (value and
key) never holds what an app's ``[apps.KEY.privacy]`` removes. Decisions:

- The fingerprint is computed before, from the ids as received: Adjust's
  retries of one activity keep matching (and a change of these options, or of
  the key, never makes an activity look new to de-duplication).
- A hashed id is ``hex(HMAC-SHA256(hash_key, id))``: the same id always gives the
  same value, so the Kafka key (``app:device``) stays one per device and keeps
  its order; a new ``hash_key`` moves each device to a new key.
- A field is changed wherever the record holds it: ``device``, ``attributes`` and
  the values kept under ``repeated``. The customer's own keys (``custom``) are
  not known to be personal and stay as sent: map such a key to its canonical
  field with an alias to have it covered.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from postback_hub.service.privacy_settings import PrivacySettings
from postback_hub.service.record import CallbackRecord


def keyed_hash(key: bytes, value: str) -> str:
    """64 lower-case hex characters: HMAC-SHA256 of the value's UTF-8 bytes."""
    return hmac.digest(key, value.encode(), "sha256").hex()


@dataclass(frozen=True, slots=True)
class PrivacyStep:
    """One app's options, resolved once (the key read, the names split by place)."""

    drop: frozenset[str]
    hash: frozenset[str]
    key: bytes

    def apply(self, record: CallbackRecord) -> CallbackRecord:
        """A copy of ``record`` without the dropped fields and with the hashed ones
        replaced; ``record`` itself is left as it was."""
        repeated = record.repeated
        if repeated:
            repeated = {
                name: [keyed_hash(self.key, v) for v in values] if name in self.hash else values
                for name, values in repeated.items()
                if name not in self.drop
            }
        # Built field by field: dataclasses.replace costs several times more per callback.
        return CallbackRecord(
            fingerprint=record.fingerprint,
            app=record.app,
            activity_kind=record.activity_kind,
            environment=record.environment,
            created_at=record.created_at,
            received_at=record.received_at,
            device=self._changed(record.device),
            event_token=record.event_token,
            revenue=record.revenue,
            attributes=self._changed(record.attributes),
            partner_parameters=record.partner_parameters,
            publisher_parameters=record.publisher_parameters,
            custom=record.custom,
            repeated=repeated,
        )

    def _changed(self, values: Mapping[str, Any]) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        for name, value in values.items():
            if name in self.drop:
                continue
            if name in self.hash and isinstance(value, str):
                changed[name] = keyed_hash(self.key, value)
            else:
                changed[name] = value
        return changed


def privacy_step(settings: PrivacySettings | None) -> PrivacyStep | None:
    """The step for an app's options; None when they change nothing (the receiver then
    does no extra work per callback)."""
    if settings is None or not (settings.drop or settings.hash):
        return None
    key = b"" if settings.hash_key is None else settings.hash_key.reveal().encode()
    return PrivacyStep(frozenset(settings.drop), frozenset(settings.hash), key)
