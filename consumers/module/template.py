"""Partner request templates: ``{placeholder}`` strings rendered from a flat context. Pure.

A module partner's request (URL, parameters, headers) is configuration, not
code. Placeholders name variables of :data:`VARIABLES` (or ``custom.KEY`` for
a customer's own callback parameters); ``{{`` and ``}}`` are literal braces.
A parameter whose placeholders are not all available is left out rather than
sent empty, the way Adjust drops placeholders without data.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from urllib.parse import quote

from postback_hub.service.fields import DEVICE_ID_FIELDS, FIELD_KINDS, Kind

CUSTOM_PREFIX = "custom."

# Variables a destination's context may offer, beyond the canonical field names.
DERIVED_VARIABLES = frozenset(
    {
        "app",
        "activity_kind",
        "environment",
        "fingerprint",
        "credential",
        "created_at",
        "created_at_unix",
        "created_at_milli",
        "received_at",
        "event_token",
        "partner_event_name",
        "revenue",
        "revenue_float",
        "currency",
        "partner_parameters",
        "is_reattribution",
    }
)
# Every timestamp also in Unix seconds, as Adjust sends it: {installed_at_unix}.
UNIX_TIMESTAMPS = {
    f"{name}_unix": name for name, kind in FIELD_KINDS.items() if kind is Kind.TIMESTAMP
}
# Kept on the record but not offered to partners.
NOT_FORWARDED = frozenset({"publisher_parameters"})
VARIABLES = (
    DERIVED_VARIABLES
    | frozenset(UNIX_TIMESTAMPS)
    | frozenset(FIELD_KINDS)
    | frozenset(DEVICE_ID_FIELDS)
) - NOT_FORWARDED

_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template that cannot be rendered (unknown placeholder, bad syntax)."""


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template``, in order; raises TemplateError on bad syntax."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"{template!r}: {exc}") from None
    names: list[str] = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion:
            raise TemplateError(f"{template!r}: write {{{field}}} without ':' or '!'")
        names.append(field)
    return names


def check(template: str) -> None:
    """Raise TemplateError unless every placeholder is a known variable."""
    for name in placeholders(template):
        custom_key = name[len(CUSTOM_PREFIX) :] if name.startswith(CUSTOM_PREFIX) else None
        if name not in VARIABLES and not custom_key:
            raise TemplateError(f"unknown placeholder {{{name}}} in {template!r}")


class Template:
    """A template parsed once; :meth:`render` is on every message's path."""

    __slots__ = ("_parts", "_single", "fields")

    def __init__(self, text: str) -> None:
        check(text)
        self._parts: tuple[tuple[str, str | None], ...] = tuple(
            (literal, field) for literal, field, _spec, _conv in _FORMATTER.parse(text)
        )
        self.fields = frozenset(field for _literal, field in self._parts if field is not None)
        # The common case, a parameter that is one placeholder: no assembly needed.
        only = self._parts[0] if len(self._parts) == 1 else None
        self._single = only[1] if only is not None and only[0] == "" else None

    def render(self, context: Mapping[str, str], *, url_encode: bool = False) -> str | None:
        """Fill in the template; None when a placeholder has no value in ``context``."""
        if self._single is not None and not url_encode:
            return context.get(self._single)
        parts: list[str] = []
        for literal, field in self._parts:
            parts.append(literal)
            if field is None:
                continue
            value = context.get(field)
            if value is None:
                return None
            parts.append(quote(value, safe="") if url_encode else value)
        return "".join(parts)


def render(template: str, context: Mapping[str, str], *, url_encode: bool = False) -> str | None:
    """Fill in ``template`` once (see :class:`Template` for repeated use)."""
    return Template(template).render(context, url_encode=url_encode)
