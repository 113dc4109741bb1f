"""`gitd distill` from the command line: what a user without the real weights sees."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from gitd.data.shapes import make_shapes


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_paper_preset_without_weights_is_one_quick_line(tmp_path):
    """HF_HUB_OFFLINE unset, an empty HF cache and a hub on a closed localhost port (nothing
    leaves the machine): one stderr line, exit 3, no stage folder, and no half minute of
    retries. Time is measured against importing the same libraries in the same run, because
    the machine may be loaded."""
    make_shapes(tmp_path / "data", train=4, test=1, size=32, seed=0, workers=1)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gitd.cli, gitd.methods.gitd, diffusers; "
                    "from diffusers import AutoencoderKL"], env=env, check=True, timeout=300)
    baseline = time.perf_counter() - t0
    out = tmp_path / "out"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "gitd", "distill",
                          str(tmp_path / "data" / "train.json"), "--pairs", "2", "--preset",
                          "paper", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 3, res.stderr
    assert len(lines) == 1, res.stderr
    # Every missing model of the run in the one line (issue 20 item 11), with the command that
    # fetches them all (issue 19 item 9).
    assert lines[0].startswith("gitd distill: error: 3 model(s) of this run cannot be loaded")
    for model in ("stable-diffusion-v1-5/stable-diffusion-v1-5", "openai/clip-vit-base-patch32",
                  "Salesforce/blip2-opt-6.7b-coco"):
        assert model in lines[0], lines[0]
    assert "gitd fetch --method gitd --preset paper'" in lines[0]
    assert "is not reachable" in lines[0] and "--preset tiny" in lines[0]
    assert not out.exists()
    # the hub libraries' retries alone sleep 1 + 2 + 4 + 8 + 8 = 23 s
    assert took - baseline < 12, (took, baseline)


def test_an_outdated_captioner_folder_is_one_line_naming_it(tmp_path, tiny_blip2, capsys):
    """Issue 19's check: a tiny local BLIP-2 whose config lacks image_token_index, as a
    captioner of a run: one line naming the model and how to refresh it, no traceback."""
    from gitd.cli import main

    make_shapes(tmp_path / "data", train=4, test=1, size=32, seed=0, workers=1)
    old = tiny_blip2(tmp_path / "blip2-old", updated=False)
    rc = main(["distill", str(tmp_path / "data" / "train.json"), "--pairs", "2", "--preset",
               "tiny", "--captioner", str(old), "--out", str(tmp_path / "out"), "--device",
               "cpu", "-q"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error" in ln]
    assert rc == 3 and len(err) == 1, err
    assert "captioner model" in err[0] and str(old) in err[0] and "is outdated" in err[0]
    assert "image_token_index" in err[0] and "Traceback" not in err[0]
