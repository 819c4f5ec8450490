"""``[reconcile]``: its bounds, and that ``run`` starts the watch only when enabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from postback_hub.consumers.registry import parse_settings
from postback_hub.service.settings import ConfigError
from postback_hub.supervisor import child_commands


def test_defaults_and_bounds() -> None:
    settings = parse_settings({})
    assert not settings.reconcile.enabled
    assert settings.reconcile.lookback_days == 3
    with pytest.raises(ConfigError) as caught:
        parse_settings({"reconcile": {"lookback_days": 31, "interval": 5}})
    problems = "\n".join(caught.value.problems)
    assert "reconcile.lookback_days" in problems
    assert "reconcile.interval: unknown key; did you mean 'interval_s'?" in problems


def test_run_starts_the_watch_only_when_enabled() -> None:
    plain = child_commands(Path("c.toml"), 1, ["kpi"], kpi_api=True)
    assert all("reconcile" not in child.command for child in plain)
    plan = child_commands(Path("c.toml"), 1, ["kpi"], kpi_api=True, reconcile=True)
    assert plan[-1].command[3:] == ["reconcile", "--watch", "--config", "c.toml"]
    assert not plan[-1].shares_port
