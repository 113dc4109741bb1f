"""Declared settings: constraints, the one validator, fingerprinted fields and generated flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitd.errors import ConfigError
from gitd.settings import (Boolean, Interval, Options, PathText, Text, add_arguments, key_dict,
                           key_fields, setting, validate)


@dataclass(frozen=True)
class Toy:
    steps: int = setting(4, Interval(int, 1, None), "steps")
    strength: float = setting(0.5, Interval(float, 0, 1, closed="right"), "strength")
    size: int = setting(64, Interval(int, 8, None, multiple_of=8), "size")
    mode: str = setting("a", Options("a", "b"), "mode")
    fast: bool = setting(False, Boolean(), "go fast")
    name: str = setting("x", Text(), "a name")
    rev: str | None = setting(None, Text(), "a revision", optional=True, metavar="REV")
    work: str | None = setting(None, PathText(), "where", optional=True, affects_results=False)
    off: bool = setting(True, Boolean(), "switch", flags=("--no-off",))
    plain: int = 3  # not declared: part of keys, not a flag


@pytest.mark.parametrize("field,value,message", [
    ("steps", 0, "steps must be >= 1, got 0"),
    ("steps", 2.0, "steps must be an integer, got 2.0"),
    ("steps", True, "steps must be an integer, got True"),
    ("strength", 0, "strength must be in (0, 1], got 0"),
    ("strength", float("nan"), "strength must be a number"),
    ("size", 100, "size must be a multiple of 8, got 100"),
    ("size", 0, "size must be >= 8"),
    ("mode", "c", "mode must be one of a, b; got 'c'"),
    ("fast", "yes", "fast must be true or false, got 'yes'"),
    ("name", " ", "name must be a non-empty string"),
    ("rev", 3, "rev must be a non-empty string, got 3"),
    ("work", 5, "work must be a path, got 5"),
])
def test_validate_names_field_rule_and_value(field, value, message):
    bad = Toy(**{field: value})  # constructing never validates
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert str(err.value) == message or str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_valid_values_and_none_where_optional():
    assert validate(Toy(rev=None, work=Path("w"), strength=1.0, size=8)) is not None


def test_keys_leave_out_only_what_is_declared_neutral():
    assert "work" not in key_fields(Toy) and {"plain", "steps", "rev"} <= set(key_fields(Toy))
    assert key_dict(Toy(work="a")) == key_dict(Toy(work="b"))
    assert key_dict(Toy(steps=5)) != key_dict(Toy())


def test_generated_flags():
    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    add_arguments(p, [("toy", Toy)])
    assert vars(p.parse_args([])) == {}  # unset flags stay unset: presets keep their say
    args = vars(p.parse_args(["--steps", "3", "--strength", "0.25", "--mode", "b", "--fast",
                              "--rev", "abc", "--no-off", "--work", "w"]))
    assert args == {"steps": 3, "strength": 0.25, "mode": "b", "fast": True, "rev": "abc",
                    "off": False, "work": "w"}
    assert vars(p.parse_args(["--no-fast"])) == {"fast": False}
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])
    with pytest.raises(SystemExit):
        p.parse_args(["--steps", "many"])
    text = p.format_help()
    assert "(>= 1)" in text and "REV" in text and "--plain" not in text


def test_a_field_several_classes_share_is_one_flag_naming_its_owners():
    @dataclass(frozen=True)
    class Other:
        steps: int = setting(9, Interval(int, 1, None), "other steps")
        only: int = setting(1, Interval(int, 0, None), "only here")

    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    owners = add_arguments(p, [("toy", Toy), ("other", Other)])
    assert owners["steps"] == ["toy", "other"] and owners["only"] == ["other"]
    text = " ".join(p.format_help().split())
    assert "toy: steps; other: other steps" in text and "(other) only here" in text


def test_bounded_integers_are_checked_while_parsing_and_huge_values_stay_one_line():
    @dataclass(frozen=True)
    class Seeded:
        seed: int = setting(0, Interval(int, 0, 2**32 - 1), "seed")

    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    add_arguments(p, [("s", Seeded)])
    assert "[0..4294967295]" in p.format_help()
    action = next(a for a in p._actions if a.dest == "seed")
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer in \[0, 4294967295"):
        action.type(str(2**80))
    with pytest.raises(ConfigError) as err:
        validate(Seeded(seed=10**5000))
    assert str(err.value) == "seed must be <= 4294967295, got a huge-digit number"


def test_check_is_validate_for_one_value():
    # The library functions' arguments get the same rules and messages as declared settings.
    from gitd.settings import check

    assert check("steps", 3, Interval(int, 1, None)) == 3
    with pytest.raises(ConfigError, match=r"^steps must be >= 1, got 0$"):
        check("steps", 0, Interval(int, 1, None))
    with pytest.raises(ConfigError, match=r"^steps must be an integer, got True$"):
        check("steps", True, Interval(int, 1, None))
    with pytest.raises(ConfigError, match=r"^size must be <= 10, got 11$"):
        check("size", 11, Interval(int, 1, 10))
    assert check("chunk", None, Interval(int, 1, None), optional=True) is None
    with pytest.raises(ConfigError, match="chunk must be an integer, got None"):
        check("chunk", None, Interval(int, 1, None))


def test_inherit_changes_the_default_only():
    from gitd.settings import declared, inherit

    @dataclass(frozen=True)
    class Loud(Toy):
        steps: int = inherit(Toy, "steps", 9)

    d, = [d for f, d in declared(Loud) if f.name == "steps"]
    e, = [d for f, d in declared(Toy) if f.name == "steps"]
    assert (Loud().steps, Toy().steps) == (9, 4)
    assert d is e  # the rule, help and flags are the group's, declared once
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        validate(Loud(steps=0))
    with pytest.raises(TypeError, match="declares no setting 'nope'"):
        inherit(Toy, "nope", 1)
