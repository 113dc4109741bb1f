"""`gitd report RUN` on a fine-tuning run plots its loss curves (issue 20, item 14), and the
report of an EDGE output made from that run shows them too."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from gitd.cli import main
from gitd.data.output import OutputPair, write_output
from gitd.data.shapes import make_shapes
from gitd.report import render_report
from gitd.stages.finetune import FinetuneSettings, finetune


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-report")
    make_shapes(root / "data", train=16, test=2, size=64, seed=5, workers=1)
    # The tiny preset at batch 8 over 16 images x 5 captions: 10 steps an epoch.
    return finetune(root / "data" / "train.json", root / "run",
                    FinetuneSettings.from_preset("tiny", device="cpu", epochs=1))


def plot_of(html: str, ident: str) -> Image.Image:
    uri = re.search(rf'<img class="plot" id="{ident}" src="data:image/png;base64,([^"]+)"',
                    html).group(1)
    return Image.open(io.BytesIO(base64.b64decode(uri)))


def test_report_of_a_run_plots_every_loss_term(run, capsys):
    assert main(["report", str(run)]) == 0
    page = run / "report.html"
    assert capsys.readouterr().out.strip() == str(page)
    html = page.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in (run / "curves.jsonl").read_text().splitlines()]
    assert f"{len(rows)} steps logged" in html and len(rows) == 10
    assert "<title>gitd report: fine-tuning run run</title>" in html
    assert re.search(r"<dt>state</dt><dd>finished: 10 steps</dd>", html)
    for term in ("contrastive", "diversity", "loss"):
        assert f"<dt>{term}</dt>" in html  # the last step's value of each term
    img = plot_of(html, "curves-plot")
    assert img.size[0] > 500 and len(img.convert("RGB").getcolors(1 << 20)) > 20
    # The run folder stays a run: resuming it is not refused because of the report.
    finetune(run.parent / "data" / "train.json", run,
             FinetuneSettings.from_preset("tiny", device="cpu", epochs=1))


def test_report_of_an_unfinished_run_and_of_an_edge_output(run, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("settings.json", "curves.jsonl"):
        (partial / name).write_bytes((run / name).read_bytes())
    with open(partial / "curves.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 1.')  # the half-written line of a killed run
    html = render_report(partial)
    assert "not finished (or still running)" in html and "10 steps logged" in html
    out = write_output(tmp_path / "edge", [OutputPair(Image.new("RGB", (32, 32)), ["c"])],
                       {"method": "edge", "finetuned": {"run": str(run)}})
    html = render_report(out)
    assert "Loss curves of the fine-tuned model" in html and 'href="#curves"' in html
    plot_of(html, "curves-plot")
