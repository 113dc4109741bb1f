"""The report rendered by a real browser: Debian's headless Chromium (skipped where absent).

``--dump-dom`` gives the DOM after the page's scripts ran: the report's own script writes the
number of pair cards into it, and its ``window.onerror`` writes any script error into it, so the
DOM shows both that JS ran and that it ran without errors.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from gitd.data.output import OutputPair, write_output
from gitd.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium "
                              "(apt-get install chromium)"),
]


def chromium(page: Path, tmp_path: Path, *extra: str) -> str:
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def make_out(root: Path, n: int) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    pairs = []
    for i in range(n):
        source = Image.new("RGB", (320, 240), (235, 235, 235))
        ImageDraw.Draw(source).ellipse((60, 40, 220, 200), fill=(50 * i % 255, 120, 200))
        source.save(src / f"{i}.jpg")
        caption = "</script><script>window.hacked=1</script>" if i == 0 else f"caption {i}"
        pairs.append(OutputPair(Image.new("RGB", (64, 64), (50 * i % 255, 120, 200)), [caption],
                                {"source_image": str(src / f"{i}.jpg"),
                                 "source_caption": f"source {i}", "cluster_size": i + 1,
                                 "scores": {"image_prompt_scores": [0.1, 0.2],
                                            "chosen_candidate": 1}}))
    out = write_output(root / "out", pairs, {"method": "gitd", "preset": "tiny", "seed": 0,
                                             "untrained": True, "skipped": [],
                                             "timings": {"encode": 1.0, "generate": 2.0}})
    summary = {k: {"mean": 2.0, "std": 0.5}
               for k in ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean")}
    (out / "results.json").write_text(json.dumps({"summary": summary,
                                                  "train": str(out / "annotations.json")}))
    return out


def rendered(dom: str) -> tuple[int | None, bool, str]:
    count = re.search(r'<body[^>]*data-rendered-pairs="(\d+)"', dom)
    errors = re.search(r'<div id="js-errors"[^>]*>(.*?)</div>', dom, re.S)
    flagged = re.search(r'<html[^>]*data-js-errors="yes"', dom) is not None
    return (int(count.group(1)) if count else None, flagged, errors.group(1) if errors else "")


def test_report_renders_in_chromium_without_script_errors(tmp_path):
    out = make_out(tmp_path, n=7)
    page = write_report(out)
    dom = chromium(page, tmp_path, "--dump-dom")
    count, flagged, errors = rendered(dom)
    assert count == 7, "the report's script did not run or did not see every pair card"
    assert not flagged and errors.strip() == "", errors
    assert len(re.findall(r'<article class="pair"', dom)) == 7
    assert 'id="rendered-count">7<' in dom
    assert 'id="results-table"' in dom and 'id="untrained-warning"' in dom
    # The hostile caption stayed text: no script of its own ran.
    assert "window.hacked=1" in dom and "<script>window.hacked" not in dom

    # The error hook itself works: a page whose script throws is reported in its DOM.
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text(encoding="utf-8").replace(
        "</body>", "<script>null.boom();</script></body>"), encoding="utf-8")
    count, flagged, errors = rendered(chromium(broken, tmp_path, "--dump-dom"))
    assert count == 7 and flagged and "script error" in errors


def test_report_screenshot(tmp_path):
    page = write_report(make_out(tmp_path, n=3))
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1000,900",
             "--hide-scrollbars")
    with Image.open(shot) as img:
        assert img.size == (1000, 900)
        # not a blank page: the embedded images and text give many distinct colours
        assert len(img.convert("RGB").getcolors(1 << 20) or []) > 50
