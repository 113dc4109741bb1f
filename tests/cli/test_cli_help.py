"""Every command's --help: each option states its default at most once."""

from __future__ import annotations

import re

import pytest

from gitd.cli import COMMANDS, build_parser


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    # Split into one block per option (a line starting with two spaces and a dash).
    blocks = re.split(r"\n  (?=-)", text)
    for block in blocks:
        assert len(re.findall(r"\(default", block)) <= 1, block
