"""What `postback-hub --help` and every subcommand's help show a newcomer."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from postback_hub.cli import build_parser


def _helps(
    parser: argparse.ArgumentParser, path: str = "postback-hub"
) -> Iterator[tuple[str, str]]:
    yield path, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _helps(sub, f"{path} {name}")


HELPS = dict(_helps(build_parser()))


def test_every_command_is_reached() -> None:
    assert {"postback-hub serve", "postback-hub kafka down", "postback-hub x attribution"} <= set(
        HELPS
    )


@pytest.mark.parametrize("command", sorted(HELPS))
def test_no_internal_marker_in_help(command: str) -> None:
    assert "SUPPRESS" not in HELPS[command]


@pytest.mark.parametrize("command", ["postback-hub kafka down", "postback-hub kafka status"])
def test_commands_that_start_nothing_take_no_heap_size(command: str) -> None:
    assert "--heap-mb" not in HELPS[command]
    assert "--heap-mb" in HELPS["postback-hub kafka up"]


def test_serve_says_what_it_runs() -> None:
    text = HELPS["postback-hub serve"]
    assert "receiver" in text
    assert "consumer" in text  # says that it runs none, unlike `run`


# X's conversion types as its conversion_event documentation lists them.
X_CONVERSION_TYPES = [
    "PURCHASE",
    "SIGN_UP",
    "INSTALL",
    "RE_ENGAGE",
    "UPDATE",
    "TUTORIAL_COMPLETE",
    "RESERVATION",
    "ADD_TO_CART",
    "ADD_TO_WISHLIST",
    "LOGIN",
    "CHECKOUT_INITIATED",
    "SEARCH",
    "LEVEL_ACHIEVED",
    "ACHIEVEMENT_UNLOCKED",
    "CONTENT_VIEW",
    "SHARE",
    "INVITE",
    "ADDED_PAYMENT_INFO",
    "SPENT_CREDITS",
    "RATED",
]


def test_x_attribution_lists_the_conversion_types_once() -> None:
    text = HELPS["postback-hub x attribution"]
    assert "--type TYPE" in text
    for conversion_type in X_CONVERSION_TYPES:
        whole_word = rf"(?<![A-Z_]){conversion_type}(?![A-Z_])"
        assert len(re.findall(whole_word, text)) == 1, conversion_type
    # The windows' few values too: once each, in their option's help.
    assert "{" not in text
