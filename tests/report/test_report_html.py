"""The HTML report: structure, escaping, embedding, missing inputs and user errors."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from gitd.cli import main
from gitd.data.output import OutputPair, write_output
from gitd.errors import GitdError
from gitd.report import read_result, render_report, write_report
from gitd.report.results import find_results

EVIL = "a <script>alert('x')</script> & \"quotes\""
METRICS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10")


def make_out(root: Path, n: int = 4, *, untrained: bool = True, missing_source: int | None = 1,
             big_source: bool = True, **manifest_extra) -> Path:
    """A distilled-set folder as gitd distill writes it, with real source images beside it."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        colour = (40 * i % 255, 200 - 30 * i % 200, 90)
        source = Image.new("RGB", (900, 700) if big_source else (48, 40), (230, 230, 230))
        ImageDraw.Draw(source).ellipse((100, 100, 500, 500), fill=colour)
        source.save(src / f"s{i}.jpg")
        synth = Image.new("RGB", (64, 64), colour)
        caption = EVIL if i == 0 else f"synthetic caption {i}"
        pairs.append(OutputPair(synth, [caption], {
            "source_id": f"s{i}",
            "source_image": "gone/never.jpg" if i == missing_source else str(src / f"s{i}.jpg"),
            "source_caption": EVIL if i == 0 else f"source caption {i}",
            "cluster_size": 3 + 2 * i,
            "scores": {"image_prompt_scores": [0.2, 0.31, 0.25], "chosen_candidate": 1,
                       "caption_candidates": ["x", caption], "caption_scores": [0.1, 0.4]},
        }))
    manifest = {
        "method": "gitd", "preset": "tiny" if untrained else "paper", "seed": 7,
        "source": {"path": str(src / "train.json"), "format": "blip", "fingerprint": "f00d",
                   "n_records": 12, "n_valid": 11},
        "config": {"strength": 0.7, "negative_prompt": "</pre><b>bold</b>"},
        "models": {"vae": {"id": "tiny", "untrained": untrained}, "captioner": "tiny-blip"},
        "untrained": untrained,
        "skipped": [{"file": "train.json", "row": 5, "kind": "missing-image",
                     "problem": "img/<bad>.jpg: image file not found"}],
        "timings": {"encode": 1.25, "cluster": 0.5, "generate": 30.0, "caption": 4.0},
        **manifest_extra,
    }
    return write_output(root / "out", pairs, manifest)


def write_results(path: Path, *, scale: float = 1.0, train: str | None = None,
                  config: dict | None = None, **extra) -> Path:
    summary = {k: {"mean": scale * (i + 1), "std": 0.3} for i, k in enumerate(METRICS)}
    summary["r_mean"] = {"mean": scale * 3.5, "std": 0.1}
    data = {"summary": summary, "config": {"epochs": 12, "protocol": "fast",
                                           "image_model": "efficientnet_lite0",
                                           "text_model": "minilm", **(config or {})},
            "seeds": [{"seed": 0}, {"seed": 1}], **extra}
    if train is not None:
        data["train"] = train
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def img_sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def decode_data_uri(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_one_card_per_pair_with_embedded_images(tmp_path):
    out = make_out(tmp_path, n=5)
    dest = write_report(out)
    assert dest == out / "report.html"
    html = dest.read_text(encoding="utf-8")
    assert len(re.findall(r'<article class="pair"', html)) == 5
    assert 'id="expected-count">5<' in html
    srcs = img_sources(html)
    # 5 distilled + 4 sources found on disk (one is missing) + the cluster-size chart
    assert len(srcs) == 5 + 4 + 1
    assert all(s.startswith("data:image/") for s in srcs)
    assert 'src="http' not in html and "<link" not in html and "@import" not in html
    assert "default-src 'none'" in html  # the page may not fetch anything
    # The 900x700 source photographs are embedded as thumbnails, not at full size.
    sizes = [decode_data_uri(s).size for s in srcs[:-1]]
    assert max(max(s) for s in sizes) <= 224
    assert (224, 174) in sizes


def test_user_text_is_escaped_everywhere(tmp_path):
    out = make_out(tmp_path)
    html = render_report(out)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    assert "</pre><b>bold</b>" not in html  # config text cannot close the <pre> it sits in
    assert "img/&lt;bad&gt;.jpg" in html
    # Exactly the two scripts the report itself ships.
    assert html.count("<script>") == 2


def test_missing_source_image_and_missing_results(tmp_path):
    out = make_out(tmp_path, missing_source=2)
    html = render_report(out)
    assert "source image not found" in html and "gone/never.jpg" in html
    assert 'id="no-results"' in html
    assert 'id="results-table"' not in html and 'id="recall-plot"' not in html


def test_header_banner_scores_timings_skipped_config(tmp_path):
    html = render_report(make_out(tmp_path / "a"))
    assert 'id="untrained-warning"' in html
    for text in ("tiny-blip", "f00d", "11 / 12", ">7<", "blip"):
        assert text in html
    # candidate image-prompt scores with the chosen one marked, and the chosen caption in bold
    assert "<b>[0.310]</b>" in html and "(chosen: candidate 1)" in html
    assert '<li class="chosen">synthetic caption 1 <b>0.400</b></li>' in html
    assert "cluster size 9" in html
    assert 'id="timings-table"' in html and "30.00 s" in html and "35.75 s" in html
    assert "Skipped rows (1)" in html and "missing-image" in html
    assert re.search(r"<details><summary>full config</summary><pre[^>]*>.*strength", html, re.S)

    trained = render_report(make_out(tmp_path / "b", untrained=False))
    assert 'id="untrained-warning"' not in trained


def test_results_table_and_recall_plot(tmp_path):
    out = make_out(tmp_path)
    write_results(out / "results.json", train=str(out / "annotations.json"))
    # Other methods' sets: method and pairs come from the manifest beside their train file.
    extra = []
    for method, pairs, scale in (("random", 50, 1.0), ("random", 100, 1.5), ("herding", 50, 1.2)):
        other = tmp_path / f"{method}-{pairs}"
        other.mkdir()
        (other / "manifest.json").write_text(json.dumps({"method": method, "pairs": pairs}))
        extra.append(write_results(tmp_path / "res" / f"{method}-{pairs}.json", scale=scale,
                                   train=str(other / "annotations.json")))
    # A result with no train path and no method: shown, labelled by its file, not plotted.
    extra.append(write_results(tmp_path / "res" / "mystery.json", scale=2.0))
    html = render_report(out, results=extra)
    table = html[html.index('id="results-table"'):html.index("</table>", html.index('id="results-table"'))]
    assert table.count("<tr") == 1 + 5
    assert "gitd, 4 pairs" in table and "(this set)" in table
    assert "random, 50 pairs" in table and "herding, 50 pairs" in table and "mystery" in table
    assert "1.5 ± 0.3" in table  # random 100 TR@1
    assert "efficientnet_lite0" in table and "minilm" in table and "last epoch" in table
    assert 'id="recall-plot"' in html
    assert "Not plotted (number of pairs unknown, or untrained)" in html
    assert "mystery.json" in html


def test_validation_selected_and_best_on_test_are_labelled(tmp_path):
    out = make_out(tmp_path)
    write_results(out / "results" / "r.json", config={"val": "val.json"},
                  best_on_test={k: {"mean": 9.0, "std": 0.0} for k in METRICS})
    html = render_report(out)
    assert "epoch chosen on the validation split" in html
    assert "best epoch ON TEST (optimistic, for comparison with papers only)" in html
    assert 'id="recall-plot"' not in html  # a single point is no curve


def test_results_read_defensively(tmp_path):
    r = read_result(write_results(tmp_path / "r.json", config={"method": "kcenter", "pairs": 20},
                                  train={"path": "nowhere/annotations.json", "fingerprint": "x"}))
    assert (r.method, r.pairs, r.n_seeds, r.selection) == ("kcenter", 20, 2, "last epoch")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"summary": {"TR@1": 1.5, "IR@1": [2.0, 0.5]}}))
    r = read_result(bare)
    assert r.summary == {"TR@1": {"mean": 1.5, "std": 0.0}, "IR@1": {"mean": 2.0, "std": 0.5}}
    assert r.method is None and r.pairs is None and r.label == "bare"


@pytest.mark.parametrize("content, expected", [
    (None, "manifest.json: not found"),
    ("{not json", "manifest.json: not valid JSON"),
    ("[1, 2]", "malformed manifest (expected a JSON object"),
    ('{"method": "gitd"}', "\"items\" must be a list"),
    ('{"items": [{"caption": "no image"}]}', "items[0] needs an \"image\""),
])
def test_bad_manifest_is_one_line_naming_the_file(tmp_path, capsys, content, expected):
    out = tmp_path / "out"
    out.mkdir()
    if content is not None:
        (out / "manifest.json").write_text(content)
    with pytest.raises(GitdError, match=re.escape(expected)):
        write_report(out)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gitd report: error: ") and str(out / "manifest.json") in err
    assert len(err.splitlines()) == 1 and not (out / "report.html").exists()


def test_cli_results_flags_and_bad_results(tmp_path, capsys):
    out = make_out(tmp_path, n=2)
    # A stray JSON in OUT/results/ is skipped with a warning shown in the page...
    (out / "results").mkdir()
    (out / "results" / "notes.json").write_text('{"hello": 1}')
    good = write_results(tmp_path / "r.json", config={"method": "random", "pairs": 2})
    dest = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(out), "--results", str(good), "--out", str(dest), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    html = dest.read_text(encoding="utf-8")
    assert "notes.json: no usable" in html and "random, 2 pairs" in html
    assert not (out / "report.html").exists()
    # ...but a file named on the command line must be a results file.
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["report", str(out), "--results", str(bad)]) == 2
    # (the last line: the logging handler the frame set up earlier may also write to stderr)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gitd report: error: ") and str(bad) in err
    assert main(["report", str(out), "--results", str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_results_several_paths_per_flag_and_a_folder_of_run_folders(tmp_path, capsys):
    out = make_out(tmp_path, n=2)
    runs = tmp_path / "runs"  # the shape of benchmarks/bench_retrieval.py's work folder
    for method, pairs in (("random", 50), ("random", 100), ("herding", 50)):
        write_results(runs / f"{method}-{pairs}" / "results.json",
                      config={"method": method, "pairs": pairs})
    a = write_results(tmp_path / "a.json", config={"method": "kcenter", "pairs": 7})
    b = write_results(tmp_path / "b.json", config={"method": "kcenter", "pairs": 9})
    assert main(["report", str(out), "--results", str(a), str(b), "--results", str(runs),
                 "-q"]) == 0
    capsys.readouterr()
    html = (out / "report.html").read_text(encoding="utf-8")
    for label in ("kcenter, 7 pairs", "kcenter, 9 pairs", "random, 50 pairs",
                  "random, 100 pairs", "herding, 50 pairs"):
        assert label in html
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(GitdError, match="no results files"):
        write_report(out, results=[empty])


def test_runs_that_differ_in_settings_are_told_apart(tmp_path):
    out = make_out(tmp_path, n=2)
    runs = tmp_path / "runs"
    for test in ("batch", "train-set"):
        for pairs in (50, 100):
            folder = runs / f"forgetting-{test}-{pairs}"
            folder.mkdir(parents=True)
            (folder / "manifest.json").write_text(json.dumps({
                "method": "forgetting", "pairs": pairs,
                "config": {"pairs": pairs, "seed": 0, "forgetting_learned": test}}))
            write_results(folder / "results.json", train=str(folder / "annotations.json"))
    clara = runs / "clara-50"
    clara.mkdir()
    (clara / "manifest.json").write_text(json.dumps({
        "method": "gitd", "pairs": 50,
        "ablations": {"cluster": True, "diffusion": False, "captioner": False, "score": True}}))
    write_results(clara / "results.json", train=str(clara / "annotations.json"))
    write_results(runs / "untrained" / "results.json", config={"epochs": 0}, n_train=2000)
    write_results(runs / "full" / "results.json", n_train=2000)
    results, _ = find_results(out, [runs])
    labels = sorted(r.label for r in results)
    assert "forgetting (forgetting_learned=batch), 50 pairs" in labels
    assert "forgetting (forgetting_learned=train-set), 100 pairs" in labels
    assert "gitd (no diffusion, no captioner), 50 pairs" in labels
    assert "full, 2000 pairs" in labels
    assert "untrained, 2000 pairs, untrained (0 epochs)" in labels
    html = render_report(out, results=[runs])
    assert 'id="recall-plot"' in html
    assert re.search(r"Not plotted \(number of pairs unknown, or untrained\): [^<]*untrained", html)


def test_empty_set_and_bare_manifest_still_render(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"items": []}))
    html = render_report(out)
    assert "This output has no pairs." in html and 'id="untrained-warning"' not in html
    (out / "manifest.json").write_text(json.dumps({"items": [{"image": "images/0000.png"}]}))
    html = render_report(out)  # no image file, no caption, no scores: a card with placeholders
    assert len(re.findall(r'<article class="pair"', html)) == 1
    assert "image not readable: images/0000.png" in html and "no source image recorded" in html


def test_relative_source_image_found_under_the_source_image_root(tmp_path):
    out = make_out(tmp_path, n=2, missing_source=None,
                   source={"path": str(tmp_path / "data" / "train.json"),
                           "image_root": str(tmp_path / "src")})
    manifest = json.loads((out / "manifest.json").read_text())
    for i, item in enumerate(manifest["items"]):
        item["source_image"] = f"s{i}.jpg"  # relative to the dataset's image root
    (out / "manifest.json").write_text(json.dumps(manifest))
    html = render_report(out)
    assert "source image not found" not in html
    assert len(img_sources(html)) == 2 + 2 + 1


def test_select_output_report_shows_no_preset_none(tmp_path):
    from gitd.data.shapes import make_shapes
    from gitd.methods.coreset import select_coreset
    make_shapes(tmp_path / "data", train=6, test=2, size=32, seed=0, workers=1)
    out = select_coreset(tmp_path / "data" / "train.json", "random", 3, tmp_path / "sel")
    html = render_report(out)
    assert "<dt>preset</dt><dd>–</dd>" in html and "<dd>None</dd>" not in html


def test_results_with_allowed_test_overlap_are_flagged(tmp_path):
    out = make_out(tmp_path)
    write_results(out / "results.json", train=str(out / "annotations.json"),
                  test_overlap={"images": 3, "allowed": True})
    html = render_report(out)
    assert "TEST OVERLAP: the test set shares 3 image(s)" in html
