"""Typed secrets: a configuration value that is never shown.

In the configuration a secret is a table, ``{env = "NAME"}`` or
``{file = "path"}`` (a relative path is relative to the configuration file),
never the value itself. Validation turns it into a :class:`Secret` on the very
model that needs it, reading the value at load time. A value that cannot be read
does not fail validation on the spot: the :class:`Secret` records the problem,
and the loader collects every unresolved secret of the parts that are in use
(a disabled destination's credentials need not exist yet), so ``check-config``
reports all problems at once.

``repr`` and ``str`` show where a secret comes from, never its value;
:meth:`Secret.reveal` is the one way to the value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

# Validation context key: the directory relative ``file`` paths are read from.
BASE_DIR = "base_dir"


class UnresolvedSecret(RuntimeError):
    """A secret was used whose value could not be read at load time."""


class Secret:
    """A resolved secret. Compares and hashes by value; prints as ``Secret(env:NAME)``."""

    __slots__ = ("_problem", "_source", "_value")

    def __init__(self, value: str | None, source: str, problem: str | None = None) -> None:
        self._value = value
        self._source = source
        self._problem = problem if value is None else None
        if value is None and problem is None:
            self._problem = "no value"

    @classmethod
    def of(cls, value: str, source: str = "literal") -> Secret:
        """A secret from a value in hand (tests, and values read by other means)."""
        return cls(value, source)

    @property
    def source(self) -> str:
        """Where the value comes from (``env:NAME`` or ``file:/path``): safe to print."""
        return self._source

    @property
    def problem(self) -> str | None:
        """Why the value could not be read, or None when it was."""
        return self._problem

    def reveal(self) -> str:
        if self._value is None:
            raise UnresolvedSecret(f"secret from {self._source} is not available: {self._problem}")
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self._value is not None and self._value == other._value

    def __hash__(self) -> int:
        return hash(self._source)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate, serialization=core_schema.plain_serializer_function_ser_schema(repr)
        )


def _validate(value: Any, info: ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, dict) or not value or not set(value) <= {"env", "file"}:
        raise ValueError('a secret is {env = "NAME"} or {file = "path"}, never the value itself')
    if len(value) != 1:
        raise ValueError("give exactly one of env or file")
    if "env" in value:
        name = value["env"]
        if not isinstance(name, str) or not name:
            raise ValueError("env must name an environment variable")
        found = os.environ.get(name)
        if not found:
            return Secret(None, f"env:{name}", f"environment variable {name} is not set or empty")
        return Secret(found, f"env:{name}")
    raw = value["file"]
    if not isinstance(raw, str) or not raw:
        raise ValueError("file must be a path")
    path = Path(raw).expanduser()
    base = (info.context or {}).get(BASE_DIR)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return Secret(None, f"file:{path}", f"cannot read {path}: {exc.strerror}")
    if not text:
        return Secret(None, f"file:{path}", f"{path} is empty")
    return Secret(text, f"file:{path}")


def unresolved(model: BaseModel, location: str = "") -> Iterator[tuple[str, Secret]]:
    """Every secret of ``model`` (recursively) whose value could not be read, by location."""
    for name in type(model).model_fields:
        yield from _walk(getattr(model, name), f"{location}.{name}" if location else name)


def _walk(node: Any, location: str) -> Iterator[tuple[str, Secret]]:
    if isinstance(node, Secret):
        if node.problem is not None:
            yield location, node
    elif isinstance(node, BaseModel):
        yield from unresolved(node, location)
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _walk(child, f"{location}.{key}")
    elif isinstance(node, list | tuple):
        for index, child in enumerate(node):
            yield from _walk(child, f"{location}.{index}")
