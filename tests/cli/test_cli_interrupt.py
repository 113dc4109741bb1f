"""Ctrl-C, pressed again and again as an impatient user does, while worker processes run and
while they are shut down, ends with the one 'interrupted' line and exit 130, never a bare
SIGINT status or a traceback (issue 11, class 9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image


def data(root: Path, n: int = 24) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (32, 32), (10 * i, 200 - 5 * i, 90)).save(root / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "caption": [f"colour number {i}"]})
    (root / "train.json").write_text(json.dumps(rows))
    return root / "train.json"


def interrupt_when(cmd: list[str], marker: bytes, timeout: float = 120) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; once ``marker`` shows on stderr, send SIGINT to
    the whole group (as a terminal does) every 30 ms until it exits."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GITD_PROGRESS_SECONDS": "0",  # a log line
           "PYTHONPATH": str(Path(__file__).parents[2] / "src")}           # per step
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    seen = threading.Event()
    chunks: list[bytes] = []

    def read():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            chunks.append(chunk)
            if marker in b"".join(chunks[-3:]):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + timeout
    sent = 0
    try:
        while not seen.is_set() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert seen.is_set(), b"".join(chunks).decode(errors="replace")[-2000:]
        while proc.poll() is None and time.time() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                sent += 1
            except ProcessLookupError:
                break
            time.sleep(0.03)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # a failed test must not leave the run behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    assert sent >= 1
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("command", ["select-forgetting", "distill-encode"])
def test_repeated_ctrl_c_ends_with_one_line_and_130(tmp_path, command):
    train = data(tmp_path / "d")
    out = tmp_path / "out"
    if command == "select-forgetting":
        cmd = [sys.executable, "-m", "gitd", "select", str(train), "--method", "forgetting",
               "--pairs", "2", "--forgetting-epochs", "100000", "--image-size", "32",
               "--cache", str(tmp_path / "cache"), "--out", str(out)]
        marker = b"training: "  # the forgetting run's epochs
    else:
        cmd = [sys.executable, "-m", "gitd", "distill", str(train), "--pairs", "2", "--preset",
               "tiny", "--encode-workers", "2", "--encode-batch-size", "1", "--resolution",
               "256", "--out", str(out)]
        marker = b"encode: "
    rc, err = interrupt_when(cmd, marker)
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert err.endswith(f"gitd {command.split('-')[0]}: interrupted; finished work is kept, "
                        "re-run the same command to resume\n"), err[-3000:]
    assert err.count("interrupted") == 1
