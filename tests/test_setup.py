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
