"""Every integer option of every command has a range, shown in --help, and a value outside it
is one line with exit 2 (issue 11, class 7)."""

from __future__ import annotations

import re

import pytest

from gitd.cli import build_parser, main
from gitd.config import make_config
from gitd.errors import ConfigError


def integer_options():
    """(command, flag, low, high, help) of every option whose value is an integer."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "distill" in a.choices)
    found = []
    for command, p in sub.choices.items():
        for action in p._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            if action.type is int:
                found.append((command, action.option_strings[0], None, None, action.help))
                continue
            if getattr(action.type, "__name__", "") == "integer":
                low, high = map(int, re.search(r"\[(-?\d+)\.\.(\d+)\]", action.help).groups())
                found.append((command, action.option_strings[0], low, high, action.help))
    return found


OPTIONS = integer_options()


def test_every_integer_option_has_a_range():
    assert len(OPTIONS) >= 25, OPTIONS  # shapes 5, check 1, distill 14, select 4, evaluate 6, ...
    plain = [(c, f) for c, f, low, _, _ in OPTIONS if low is None]
    assert not plain, f"integer options without a range: {plain}"
    flags = {(c, f) for c, f, *_ in OPTIONS}
    for must in [("distill", "--seed"), ("select", "--seed"), ("shapes", "--seed"),
                 ("evaluate", "--seeds"), ("report", "--thumb-size"), ("check", "--workers")]:
        assert must in flags


@pytest.mark.parametrize("command,flag,low,high", [o[:4] for o in OPTIONS],
                         ids=[f"{o[0]}{o[1]}" for o in OPTIONS])
def test_values_outside_the_range_are_one_line(capsys, command, flag, low, high):
    for value in (str(low - 1), str(high + 1), str(2**80), "2**80", "1.5", "9" * 5000):
        assert main([command, flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(f"gitd {command}: error: argument {flag}")
        assert f"must be an integer in [{low}, {high}]" in err[0] and len(err[0]) < 200


def test_seed_range_holds_in_the_library_and_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"seed must be <= 4294967295"):
        make_config("tiny", seed=2**80).validate()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"preset: tiny\nseed: {2**80}\n")
    with pytest.raises(ConfigError, match=r"seed must be <= 4294967295"):
        make_config(config_file=cfg).validate()
    from gitd.methods.coreset import select_coreset
    with pytest.raises(ConfigError, match=r"seed must be <= 4294967295"):
        select_coreset(tmp_path / "none.json", "random", 2, tmp_path / "o", seed=2**80)
