"""The report's results section: stale results are marked, never "this set" (issue 20, item 1),
and every table shows the chance level of its test set with warnings where K is too large
(item 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from gitd.data.output import OutputPair, write_output
from gitd.report import render_report
from gitd.store import file_fingerprint

METRICS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10")


def make_out(root: Path, captions_per_image: int = 1) -> Path:
    pairs = [OutputPair(Image.new("RGB", (32, 32), (60 * i, 90, 200)),
                        [f"caption {i}.{j}" for j in range(captions_per_image)])
             for i in range(3)]
    return write_output(root / "out", pairs, {"method": "gitd", "untrained": False})


def results_for(out: Path, path: Path, *, r_mean: float, std: float = 0.2,
                test_images: int = 100, test_captions: int = 500) -> Path:
    """A results file as gitd evaluate writes it: the training file's path and fingerprint and
    the test set's size."""
    summary = {k: {"mean": r_mean, "std": std} for k in (*METRICS, "r_mean")}
    train = out / "annotations.json"
    data = {"gitd_version": "0.1.0", "summary": summary, "train": str(train),
            "train_fingerprint": file_fingerprint(train), "test": "data/test.json",
            "sets": {"test": {"path": "data/test.json", "images": test_images,
                              "captions": test_captions}},
            "epochs": 2, "seeds": [{"seed": 0}, {"seed": 1}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def results_table(html: str) -> str:
    start = html.index('id="results-table"')
    return html[start:html.index("</table>", start)]


def test_results_of_a_changed_set_are_marked_stale_not_this_set(tmp_path):
    out = make_out(tmp_path)
    saved = results_for(out, tmp_path / "elsewhere" / "results.json", r_mean=30.0)
    html = render_report(out, results=[saved])
    assert "(this set)" in results_table(html) and "STALE" not in html
    # The set is rewritten with more captions per image (as gitd caption --extra does): the
    # same file name, other bytes.
    make_out(tmp_path, captions_per_image=2)
    html = render_report(out, results=[saved])
    table = results_table(html)
    assert "(this set)" not in table and 'class="this"' not in table
    assert 'class="stale"' in table and "gitd, 3 pairs, STALE" in table
    assert re.search(r"STALE: \S*annotations\.json changed since this evaluation", table)
    assert 'id="headline"' not in html and 'id="at-chance"' not in html  # no "this set" figure


def test_a_results_file_inside_the_folder_is_checked_too(tmp_path):
    out = make_out(tmp_path)
    results_for(out, out / "results.json", r_mean=30.0)
    data = json.loads((out / "results.json").read_text())
    del data["train"]  # an older file: only its place says which set it is about
    (out / "results.json").write_text(json.dumps(data))
    assert "(this set)" in results_table(render_report(out))
    (out / "annotations.json").write_text((out / "annotations.json").read_text() + "\n")
    assert "(this set)" not in results_table(render_report(out))


def test_chance_row_and_headline(tmp_path):
    out = make_out(tmp_path)
    results_for(out, out / "results.json", r_mean=30.0)
    html = render_report(out)
    table = results_table(html)
    # 100 test images with 5 captions each: chance r_mean 5.3, TR@1 1.0, IR@10 10.0.
    row = re.search(r'<tr class="chance">(.*?)</tr>', table).group(1)
    assert "chance level (random ranking)" in row and "100 images, 500 captions" in row
    assert [c for c in re.findall(r'<td class="num">([\d.]+)</td>', row)] == \
        ["1.0", "4.9", "9.6", "1.0", "5.0", "10.0", "5.3"]
    assert 'id="headline"' in html and "a random ranking of this test set scores 5.26" in html
    assert 'id="at-chance"' not in html and "trivial-k" not in html


def test_a_result_within_noise_of_chance_says_at_chance(tmp_path):
    out = make_out(tmp_path)
    results_for(out, out / "results.json", r_mean=4.93, std=0.3)  # the demo's figure
    html = render_report(out)
    assert 'id="at-chance"' in html
    banner = re.search(r'<div class="banner" id="at-chance">(.*?)</div>', html).group(1)
    assert banner.startswith("At chance: retrieval r_mean <b>4.93 ± 0.30</b>")


def test_k_at_least_the_test_set_is_warned(tmp_path):
    out = make_out(tmp_path)
    results_for(out, out / "results.json", r_mean=80.0, test_images=4, test_captions=4)
    html = render_report(out)
    warnings = re.findall(r'<div class="banner trivial-k">(.*?)</div>', html)
    assert any("K=5 &gt;= 4 test images: IR@5 is 100 for any model" in w for w in warnings)
    assert any("K=10 &gt;= 4 test captions: TR@10 is 100" in w for w in warnings)
    assert 'id="at-chance"' in html  # 80 is within noise of this test's chance (75, noise 7)


def test_every_row_within_noise_of_chance_says_so(tmp_path):
    """Issue 20, item 2: a random-weight word-salad set "beat" herding on real photos; both
    were at chance, and the table now says so on each row."""
    out = make_out(tmp_path)
    results_for(out, out / "results.json", r_mean=59.7, std=0.0, test_images=6,
                test_captions=12)
    herding = results_for(out, tmp_path / "herding" / "results.json", r_mean=61.8, std=10.8,
                          test_images=6, test_captions=12)
    better = results_for(out, tmp_path / "better" / "results.json", r_mean=95.0, std=1.0,
                         test_images=6, test_captions=12)
    table = results_table(render_report(out, results=[herding, better]))
    assert table.count("at chance: r_mean within noise of a random ranking&#x27;s 63.9") == 2
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", table)
    assert "at chance" not in next(row for row in rows if "better" in row)
