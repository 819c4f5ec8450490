"""Configuration of a BackInApp-style module partner: a request template and per-app
switches. Registered as destination type ``module``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from postback_hub.consumers.config import HttpDestination
from postback_hub.service.privacy_settings import PERSONAL_FIELDS
from postback_hub.service.secrets import Secret


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _same_endpoint(first: str, second: str) -> bool:
    """Whether two template URLs name the same endpoint, up to case, default port and a
    trailing slash (a sandbox URL like that would reach production)."""

    def key(url: str) -> tuple[str, str, int | None, str, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port or {"http": 80, "https": 443}.get(scheme)
        except ValueError:  # a placeholder where the port goes
            port = None
        return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"), parts.query

    return key(first) == key(second)


class RequestTemplate(_Strict):
    """The partner's HTTP request, with ``{placeholders}`` (see template.py)."""

    method: Literal["GET", "POST"] = "GET"
    url: str
    # Sandbox callbacks go here; without it they are never sent.
    sandbox_url: str | None = None
    encoding: Literal["query", "form", "json"] = "query"
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_placeholders(self) -> Self:
        from postback_hub.consumers.module.template import check

        for text in [
            self.url,
            self.sandbox_url or "",
            *self.params.values(),
            *self.headers.values(),
        ]:
            check(text)
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.sandbox_url is not None and _same_endpoint(self.sandbox_url, self.url):
            # Sandbox traffic must never reach the partner's production endpoint.
            raise ValueError("sandbox_url must not be the production url")
        if self.method == "GET" and self.encoding != "query":
            raise ValueError("a GET request carries its parameters in the query (encoding = query)")
        return self


class ModulePartnerApp(_Strict):
    """One app's settings for a BackInApp-style module partner."""

    # The partner's credential (BackInApp: the partner id): {credential} in the template.
    credential: Secret
    forward_sessions: bool = False
    # Adjust event token -> partner event name. Only linked events are sent.
    event_links: dict[str, str] = Field(default_factory=dict)
    forward_revenue: bool = False
    forward_partner_parameters: bool = False
    # Send only activities this partner is credited with (network_names match).
    attributions_only: bool = False
    network_names: list[str] = Field(default_factory=list)
    forward_rejected_installs: bool = True
    forward_rejected_reattributions: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.forward_revenue and not self.event_links:
            raise ValueError("forward_revenue needs at least one linked event (event_links)")
        if self.attributions_only and not self.network_names:
            raise ValueError("attributions_only needs network_names")
        return self


class ModuleDestination(HttpDestination):
    type: Literal["module"]
    template: RequestTemplate
    apps: dict[str, ModulePartnerApp] = Field(default_factory=dict)

    def raw_fields(self, app: str) -> Mapping[str, str]:
        """The personal fields the template sends (the partner needs them as received)."""
        from postback_hub.consumers.module.template import placeholders

        if app not in self.apps:
            return {}
        template = self.template
        texts = [template.url, template.sandbox_url or "", *template.params.values()]
        used = {
            name for text in [*texts, *template.headers.values()] for name in placeholders(text)
        }
        return {name: f"the template's {{{name}}}" for name in PERSONAL_FIELDS if name in used}
