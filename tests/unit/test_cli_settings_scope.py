from __future__ import annotations

import pytest

from postback_hub.consumers.registry import parse_settings
from postback_hub.service.secrets import UnresolvedSecret
from postback_hub.service.settings import ConfigError


def test_kafka_only_tools_need_no_app_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSENT_SECRET", raising=False)
    document = {"apps": {"a": {"secret": {"env": "ABSENT_SECRET"}}}}
    with pytest.raises(ConfigError):
        parse_settings(document)
    settings = parse_settings(document, app_secrets=False)
    assert "a" in settings.apps
    with pytest.raises(UnresolvedSecret):
        settings.apps["a"].secret.reveal()
