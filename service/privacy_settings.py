"""Per-app privacy options: personal fields dropped or keyed-hashed before storage.

``[apps.KEY.privacy]`` names fields of the canonical record that the receiver
removes (``drop``) or replaces with HMAC-SHA256 under ``hash_key`` (``hash``)
before the record reaches Kafka; :mod:`postback_hub.service.record_privacy`
applies them. The loader also asks every enabled destination which fields it
needs as received (:meth:`DestinationBase.raw_fields`) and refuses a
configuration in which one of them is dropped or hashed for an app it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from postback_hub.service.fields import DEVICE_ID_FIELDS, KEY_FIELDS
from postback_hub.service.secrets import Secret

# Attributes of the record (beside its device ids) that these options apply to.
PERSONAL_ATTRIBUTES: tuple[str, ...] = ("ip_address", "user_agent")
PERSONAL_FIELDS: tuple[str, ...] = (*PERSONAL_ATTRIBUTES, *DEVICE_ID_FIELDS)
# A key this short could be guessed; 32 random bytes (64 hex characters) is the advice.
MIN_HASH_KEY_BYTES = 16


class PrivacySettings(BaseModel):
    """``drop`` and ``hash`` name fields of :data:`PERSONAL_FIELDS`; ``hash`` needs
    ``hash_key``. An id that keys the record on Kafka can be hashed, not dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: list[str] = Field(default_factory=list)
    hash: list[str] = Field(default_factory=list)
    hash_key: Secret | None = None

    @field_validator("drop", "hash")
    @classmethod
    def _personal_fields(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in PERSONAL_FIELDS]
        if unknown:
            raise ValueError(
                f"not a field these options apply to: {', '.join(unknown)}"
                f" (known: {', '.join(PERSONAL_FIELDS)})"
            )
        return list(dict.fromkeys(names))

    @field_validator("drop")
    @classmethod
    def _keys_stay(cls, names: list[str]) -> list[str]:
        keys = [name for name in names if name in KEY_FIELDS]
        if keys:
            # Without it a record could be left with no device id at all: nothing to key
            # it by on Kafka, and nothing to keep one device's activities in order with.
            raise ValueError(
                f"{', '.join(keys)} identifies the device (the Kafka key and per-device order"
                " need it): hash it instead"
            )
        return names

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        both = [name for name in self.drop if name in self.hash]
        if both:
            raise ValueError(f"{', '.join(both)} both dropped and hashed: choose one")
        if self.hash and self.hash_key is None:
            raise ValueError('hash needs hash_key ({env = "NAME"} or {file = "path"})')
        key = self.hash_key
        # An unreadable key is reported by the loader with the other unreadable secrets.
        if (
            key is not None
            and key.problem is None
            and len(key.reveal().encode()) < MIN_HASH_KEY_BYTES
        ):
            raise ValueError(
                f"hash_key must be at least {MIN_HASH_KEY_BYTES} bytes"
                " (for example the output of `openssl rand -hex 32`)"
            )
        return self


def privacy_conflicts(
    where: str, app: str, privacy: PrivacySettings, needed: Mapping[str, str]
) -> list[str]:
    """A problem for each field a destination ``needed`` as received (field -> what needs
    it) that ``apps.APP.privacy`` drops or hashes."""
    problems: list[str] = []
    for field, reason in needed.items():
        if field in privacy.drop:
            change = f"apps.{app}.privacy.drop removes it"
        elif field in privacy.hash:
            change = f"apps.{app}.privacy.hash replaces it with a keyed hash"
        else:
            continue
        problems.append(f"{where}: {reason} needs {field} as received, but {change}")
    return problems
