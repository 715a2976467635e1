"""Typed configs: dataclass fields become CLI options whose help says the default a preset really uses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from splatworks.config import add_arguments, from_args, from_dict, option, to_dict


@dataclass
class Inner:
    rate: float = option(0.5, "A rate.")


@dataclass
class Demo:
    iterations: int = option(100, "How many steps.")
    mode: str = option("a", "Which mode.", choices=("a", "b"))
    steps: tuple[int, ...] = option((1, 2), "Checkpoint steps.")
    verbose: bool = option(False, "Say more.")
    inner: Inner = option(factory=Inner)
    tuned: Inner = option(factory=lambda: Inner(rate=0.125))   # a nested config with other values than its class


def parse(argv: list[str], presets=None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo, presets=presets)
    return parser, parser.parse_args(argv)


def test_options_round_trip_into_the_dataclass() -> None:
    _, ns = parse(["--iterations", "7", "--mode", "b", "--steps", "3", "4", "--verbose", "--inner.rate", "0.25"])
    cfg = from_args(Demo, ns)
    assert cfg == Demo(iterations=7, mode="b", steps=(3, 4), verbose=True, inner=Inner(rate=0.25))
    assert from_dict(Demo, to_dict(cfg)) == cfg


def test_unset_options_keep_the_base_config() -> None:
    _, ns = parse(["--mode", "b"])
    assert from_args(Demo, ns, base=Demo(iterations=9)) == Demo(iterations=9, mode="b")


def test_bad_choice_and_unknown_saved_setting_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["--mode", "z"])
    with pytest.raises(ValueError, match="no setting 'iteratons'"):
        from_dict(Demo, {"iteratons": 3})


def test_help_shows_preset_defaults_where_they_differ() -> None:
    parser, _ = parse([], presets={"fast": {"iterations": 10}, "same": {"iterations": 100}})
    text = " ".join(parser.format_help().split())
    assert "(preset fast: 10; otherwise 100)" in text
    assert "preset same" not in text  # equal to the plain default: not worth a mention
    assert "Which mode. (default: a)" in text


def test_help_of_a_nested_config_shows_the_values_its_parent_builds() -> None:
    parser, ns = parse([])
    text = " ".join(parser.format_help().split())
    assert "--inner.rate INNER__RATE A rate. (default: 0.5)" in text
    assert "--tuned.rate TUNED__RATE A rate. (default: 0.125)" in text
    assert from_args(Demo, ns).tuned.rate == 0.125
