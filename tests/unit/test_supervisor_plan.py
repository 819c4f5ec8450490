"""The supervisor's plan: which processes a deployment runs, and which share the port."""

from __future__ import annotations

from pathlib import Path

from postback_hub.supervisor import child_commands


def test_workers_share_the_port_and_consumers_do_not() -> None:
    plan = child_commands(Path("c.toml"), 2, ["bia", "x"])

    roles = [(child.command[3:], child.shares_port) for child in plan]
    assert roles == [
        (["worker", "--config", "c.toml"], True),
        (["worker", "--config", "c.toml"], True),
        (["consume", "bia", "--config", "c.toml"], False),
        (["consume", "x", "--config", "c.toml"], False),
    ]


def test_a_kpi_sink_brings_the_kpi_api_along() -> None:
    plan = child_commands(Path("c.toml"), 1, ["kpi"], kpi_api=True)
    assert [child.command[3:] for child in plan] == [
        ["worker", "--config", "c.toml"],
        ["consume", "kpi", "--config", "c.toml"],
        ["kpi", "serve", "--config", "c.toml"],
    ]
    assert not plan[-1].shares_port
