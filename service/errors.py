"""Client errors of the receiver, each with the JSON body Adjust (or a person) will read.

A 4xx makes Adjust drop a callback forever, so every error here must describe a
request that can never succeed as sent. Transient trouble on our side is never an
``IntakeError``: it is a 503 raised by the handler.
"""

from __future__ import annotations

from typing import Any


class IntakeError(Exception):
    """A request that can never succeed; rendered as ``{"error": {code, field, message}}``."""

    status = 400

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "field": self.field, "message": self.message}}


class BadRequest(IntakeError):
    status = 400


class Unauthorized(IntakeError):
    status = 401


class Forbidden(IntakeError):
    status = 403


class NotFound(IntakeError):
    status = 404


class PayloadTooLarge(IntakeError):
    status = 413


class UnsupportedMediaType(IntakeError):
    status = 415
