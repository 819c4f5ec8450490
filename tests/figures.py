"""Figures a test measures, shown at the end of the run (a pytest plugin).

pytest captures a passing test's output, so the figures the fault scenarios print
(sent, acknowledged, delivered and duplicates per destination) used to be lost.
A test asks for :func:`record_figures` and calls it with a name and its figures;
after the run, the terminal summary shows every recorded line, in the order
recorded, in a section of its own, whether the test then passed or failed.
tests/conftest.py registers this module (``pytest_plugins``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import pytest

SECTION = "fault scenario figures"

Figures = Mapping[str, object]
_RECORDED = pytest.StashKey[list[tuple[str, dict[str, object]]]]()


class RecordFigures(Protocol):
    def __call__(self, name: str, figures: Figures) -> None: ...


def figure_line(name: str, figures: Figures) -> str:
    """``[broker SIGKILL] sent=120, acknowledged=118``: one scenario's figures on one line."""
    return f"[{name}] " + ", ".join(f"{key}={value}" for key, value in figures.items())


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDED] = []


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> RecordFigures:
    """Keeps figures for the run's summary (and prints them into the test's own output,
    which pytest shows when the test fails)."""
    recorded = request.config.stash[_RECORDED]

    def record(name: str, figures: Figures) -> None:
        recorded.append((name, dict(figures)))
        print(figure_line(name, figures))

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    recorded = config.stash.get(_RECORDED, [])
    if not recorded:
        return
    terminalreporter.section(SECTION)
    for name, figures in recorded:
        terminalreporter.write_line(figure_line(name, figures))
