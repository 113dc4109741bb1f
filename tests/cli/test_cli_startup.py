"""Start-up imports only what the command needs (issue 20, item 14); no abbreviated flags
(item 13); every command that runs models takes --threads (item 6); distill --help states the
defaults (item 13)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from gitd.cli import COMMANDS, MODEL_COMMANDS, build_parser, main

HEAVY = ("torch", "numpy", "PIL", "matplotlib", "transformers", "diffusers")


def heavy_modules_after(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running ``code``."""
    probe = (f"import sys\n{code}\n"
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_torch():
    assert heavy_modules_after("import gitd.cli") == []


def test_help_and_check_parsers_import_no_torch():
    # `gitd --help` lists every command from its HELP line; `gitd check` builds only its own
    # parser. Neither needs torch (the distill parser does: it lists every method's settings).
    code = ("from gitd.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "from gitd.cli import build_parser\nbuild_parser(['check', 'x'])")
    assert "torch" not in heavy_modules_after(code)


def test_every_command_is_listed_by_its_help_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), name


def test_the_lazy_parser_parses_like_the_full_one():
    argv = ["check", "some/data", "--split", "test", "--json"]
    lazy, full = build_parser(argv).parse_args(argv), build_parser().parse_args(argv)
    assert {k: v for k, v in vars(lazy).items() if k != "_run"} == \
        {k: v for k, v in vars(full).items() if k != "_run"}


@pytest.mark.parametrize("argv, flag, suggestion", [
    (["distill", "d", "--pair", "3", "--out", "o"], "--pair", "--pairs"),
    (["distill", "d", "--pairs", "3", "--ouput", "o"], "--ouput", "--out"),
    (["evaluate", "--train", "t", "--test", "s", "--epoch", "3"], "--epoch", "--epochs"),
    (["shapes", "o", "--trai", "3"], "--trai", "--train"),
])
def test_an_abbreviated_or_misspelt_flag_is_an_unknown_flag(argv, flag, suggestion, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"unrecognized arguments: {flag} (did you mean {suggestion}?)" in err
    assert "required" not in err


def test_model_commands_take_threads_and_others_do_not(capsys):
    for name in COMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if a.choices and name in a.choices).choices[name]
        assert ("--threads" in sub._option_string_actions) == (name in MODEL_COMMANDS), name
    assert main(["distill", "d", "--pairs", "2", "--out", "o", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_distill_help_states_each_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for expected in ("--num-candidates INT (gitd) images generated per medoid; the score model "
                     "keeps one [1..64] (default: 4)",
                     "(default: edge 1; gitd, pds 0)",  # --extra-captions differs by method
                     "--seed INT seed of the whole run; same seed, machine and device: same "
                     "output [0..4294967295] (default: 0)"):
        assert expected in text
