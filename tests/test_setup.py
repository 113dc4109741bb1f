"""What the README tells a new user: set-up variants of the Makefile, and the Python example."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make_n(*args: str) -> str:
    return subprocess.run(["make", "-n", "-C", str(ROOT), "install", "VENV=/nonexistent/venv",
                           *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_install_can_use_an_existing_torch():
    default = _make_n()
    assert "pip install -q torch==" in default and "--system-site-packages" not in default
    reuse = _make_n("VENV_FLAGS=--system-site-packages", "TORCH=")
    assert "-m venv --system-site-packages /nonexistent/venv" in reuse
    assert "torch" not in reuse and "pip install -q -e '.[dev]'" in reuse
    readme = (ROOT / "README.md").read_text()
    assert "make install VENV_FLAGS=--system-site-packages TORCH=" in readme
    assert "INSTALL_MEASUREMENT" not in readme  # the measured figure is filled in


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_lints_with_ruff_before_the_tests():
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "test", "VENV=/nonexistent/venv"],
                         capture_output=True, text=True, check=True).stdout
    lint = out.index("/nonexistent/venv/bin/python -m ruff check src tests benchmarks")
    assert lint < out.index("-m pytest")
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"F", "E9"} <= set(project["tool"]["ruff"]["lint"]["select"])
    assert project["tool"]["ruff"]["line-length"] == 100
    assert any(d.startswith("ruff") for d in project["project"]["optional-dependencies"]["dev"])


def test_readme_python_example_reads_what_make_demo_writes(tmp_path, monkeypatch):
    """The README's Python block, run where `make demo` ran (demo/data from `gitd shapes`),
    with the two long calls replaced by stand-ins that check their inputs exist."""
    import gitd.evaluation.evaluate as E
    import gitd.methods as M
    from gitd.data import load_dataset
    from gitd.data.output import OutputPair, write_output
    from gitd.data.shapes import make_shapes

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^DEMO \?= demo$", makefile, re.M)
    assert "gitd shapes $(DEMO)/data" in makefile
    monkeypatch.chdir(tmp_path)
    make_shapes("demo/data", train=8, test=2, size=32, seed=0, workers=1)

    seen = {}

    def fake_distill(data, out, config, **kw):
        seen["data"] = load_dataset(data)
        rec = seen["data"][0]
        return write_output(out, [OutputPair(rec.image, [rec.captions[0]])], {"method": "gitd"})

    def fake_evaluate(train, test, **kw):
        seen["train"], seen["test"] = load_dataset(train), load_dataset(test)
        return {"summary": {k: {"mean": 0.0, "std": 0.0} for k in E.METRIC_NAMES}}

    monkeypatch.setattr(M, "distill", fake_distill)
    monkeypatch.setattr(E, "evaluate", fake_evaluate)
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    assert len(seen["data"]) == 8 and len(seen["test"]) == 2 and len(seen["train"]) == 1


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_licence_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    """Issue 20, item 10: the license table is deprecated (builds stop after 2027-02-18)."""
    meta = _pyproject()
    assert meta["project"]["license"] == "Apache-2.0"
    floor = next(r for r in meta["build-system"]["requires"] if r.startswith("setuptools"))
    version = tuple(int(x) for x in re.search(r">=([\d.]+)", floor).group(1).split("."))
    assert version >= (77, 0)  # PEP 639 license expressions


def test_a_wheel_ships_the_report_assets(tmp_path):
    """Issue 18: the report's CSS and JS are package data; a non-editable install renders."""
    import fnmatch
    import sys

    globs = _pyproject()["tool"]["setuptools"]["package-data"]["gitd.report"]
    assets = sorted(p.name for p in (ROOT / "src/gitd/report/assets").iterdir())
    assert assets and all(any(fnmatch.fnmatch(f"assets/{a}", g) for g in globs) for a in assets)
    # The real thing: build the wheel (offline, with the installed setuptools) from a copy of
    # the sources (a build writes build/ and *.egg-info beside them), install it into a folder
    # of its own, and read the assets through the installed package.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(tree)], check=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("gitd-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, timeout=300)
    probe = ("import gitd.report.page as p, sys; assert p.__file__.startswith(sys.argv[1]), "
             "p.__file__; print(len(p.asset('report.css')), len(p.asset('pairs.js')))")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert all(int(n) > 100 for n in done.stdout.split())


def test_readme_and_demo_say_how_to_reach_the_gitd_command():
    """Issue 20, item 9: after `make demo`, `gitd --help` was 'command not found'."""
    readme = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in readme and "`.venv/bin/gitd`" in readme
    assert _pyproject()["project"]["scripts"]["gitd"] == "gitd.cli:main"  # what pip puts there
    if shutil.which("make"):
        demo = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", "VENV=/nonexistent/venv"],
                              capture_output=True, text=True, check=True).stdout
        assert "source /nonexistent/venv/bin/activate" in demo


def test_finetune_help_and_readme_give_the_same_measured_time(capsys):
    """Issue 20, item 6: --help said the tiny fine-tuning takes seconds, the README 253 s."""
    from gitd.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    steps, seconds = re.search(r"tiny \(.*?(\d+) steps in (\d+) s", text).groups()
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    assert f"`gitd finetune` ({steps} steps) {seconds} s" in readme
    assert "in seconds" not in text
