"""`gitd benchmark` (issue 21, item 4): every set made and evaluated the same way, resumed cell
by cell after the process is killed, one folder `gitd report` renders."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gitd.cli import main


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    from gitd.data.shapes import make_shapes
    from gitd.evaluation.tiny import write_tiny_text_model
    from gitd.methods.coreset import select_coreset

    root = tmp_path_factory.mktemp("bench-data")
    make_shapes(root / "data", train=30, test=8, size=32, seed=1, workers=1)
    text = write_tiny_text_model(root / "text")
    extra = root / "extra"
    select_coreset(root / "data" / "train.json", "random", 5, extra, seed=7)
    return root / "data", str(text), extra


def _args(data, text, extra, out, cache):
    return [str(data / "train.json"), "--test", str(data / "test.json"), "--methods", "random",
            "--pairs", "3,6", "--extra", f"elsewhere={extra}", "--seeds", "2", "--epochs", "2",
            "--image-model", "timm:resnet10t", "--no-pretrained", "--text-model", text,
            "--image-size", "32", "--batch-size", "4", "--workers", "0", "--cache", str(cache),
            "--out", str(out), "-q"]


def _rows(table: str) -> list[list[str]]:
    """The table's rows without the cost columns (wall times differ between runs)."""
    return [line.split(" | ")[:-2] for line in table.splitlines() if line.startswith("| ")]


def test_killed_benchmark_resumes_cell_by_cell_to_the_same_table(bench_data, tmp_path):
    data, text, extra = bench_data
    whole = tmp_path / "whole"
    assert main(["benchmark", *_args(data, text, extra, whole, tmp_path / "c1")]) == 0
    expected = (whole / "table.md").read_text()
    assert len(_rows(expected)) == 4  # header + 3 cells

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gitd", "benchmark",
           *_args(data, text, extra, killed, tmp_path / "c2")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = killed / "cells" / "random-3.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        rec = json.loads(first.read_text()) if first.is_file() else {}
        if rec.get("status") == "done":
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # mid-way: the first cell done, the rest not
    proc.wait()
    assert not (killed / "table.md").exists()
    done_before = json.loads(first.read_text())
    made_at = (killed / "sets" / "random-3" / "manifest.json").stat().st_mtime_ns

    assert main(["benchmark", *_args(data, text, extra, killed, tmp_path / "c2")]) == 0
    assert _rows((killed / "table.md").read_text()) == _rows(expected)
    # the finished cell was neither made nor trained again; its cost is the one measured then
    assert (killed / "sets" / "random-3" / "manifest.json").stat().st_mtime_ns == made_at
    again = json.loads(first.read_text())
    assert again["make"] == done_before["make"] and again["evaluate"] == done_before["evaluate"]
    for name in ("random-3", "random-6", "elsewhere"):
        rec = json.loads((killed / "cells" / f"{name}.json").read_text())
        assert rec["status"] == "done" and rec["evaluate"]["device"] == "cpu"
        assert (killed / rec["results"]).is_file()


def test_report_of_a_benchmark_shows_table_costs_and_plot(bench_data, tmp_path):
    data, text, extra = bench_data
    out = tmp_path / "bench"
    assert main(["benchmark", *_args(data, text, extra, out, tmp_path / "c")]) == 0
    assert main(["report", str(out), "-q"]) == 0
    html = (out / "report.html").read_text()
    assert '<table id="benchmark-table">' in html and 'id="recall-plot"' in html
    for name in ("random-3", "random-6", "elsewhere"):
        assert f"<td>{name}<br>" in html
    assert "made elsewhere" in html and " s on cpu" in html
    assert "<title>gitd report: benchmark, 3 of 3 sets</title>" in html
    # a cell that has not finished is listed as such
    (out / "cells" / "random-6.json").unlink()
    assert main(["report", str(out), "-q"]) == 0
    assert "not finished (not started)" in (out / "report.html").read_text()


@pytest.mark.parametrize("extra,needle", [
    (["--methods", "random,nonesuch"], "unknown select method 'nonesuch'"),
    (["--pairs", "3,x"], "pairs must be positive integers"),
    (["--extra", "bad name=/x"], "the name must be"),
    (["--extra", "a=/does/not/exist"], "does not exist"),
    (["--methods", "random", "--pairs", "3,3"], "names a number twice"),
])
def test_bad_benchmark_input_is_one_line(bench_data, tmp_path, capsys, extra, needle):
    data, text, _ = bench_data
    rc = main(["benchmark", str(data / "train.json"), "--test", str(data / "test.json"),
               "--out", str(tmp_path / "b"), "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "b").exists()
