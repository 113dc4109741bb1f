"""Pair cards: source images inside WebDataset shards are shown (issue 20, item 5), and a
selection is labelled as what it is, with no links to sections it does not have (item 14)."""

from __future__ import annotations

import re

from PIL import Image

from gitd.data import load_dataset
from gitd.data.output import OutputPair, write_output
from gitd.data.shards import find_member
from gitd.report import render_report


def test_source_images_inside_shards_are_read_by_offset(shard_set, tmp_path):
    _, shards, pattern = shard_set
    records = load_dataset(pattern).records[:3]
    pairs = [OutputPair(Image.new("RGB", (32, 32), (80 * i, 90, 200)), [f"synthetic {i}"],
                        {"source_image": str(rec.image), "source_caption": rec.captions[0],
                         "cluster_size": 2})
             for i, rec in enumerate(records)]
    out = write_output(tmp_path / "out", pairs, {"method": "gitd", "source": {
        "path": pattern, "format": "webdataset", "image_root": str(shards)}})
    assert "::" in str(records[0].image)
    html = render_report(out)
    assert "source image not found" not in html
    sources = re.findall(r'<img src="(data:[^"]*)" alt="source image of pair \d">', html)
    assert len(sources) == 3
    # The member is the one the data layer reads: same offset, same bytes.
    member = records[1].image
    found = find_member(member.shard, member.name)
    assert (found.offset, found.size) == (member.offset, member.size)
    assert found.read_bytes() == member.read_bytes()
    assert find_member(member.shard, "no-such-member.png") is None
    assert find_member(tmp_path / "missing.tar", member.name) is None


def test_a_selection_is_labelled_as_real_pairs(tmp_path):
    from gitd.data.shapes import make_shapes
    from gitd.methods.coreset import select_coreset

    make_shapes(tmp_path / "data", train=6, test=2, size=32, seed=0, workers=1)
    out = select_coreset(tmp_path / "data" / "train.json", "random", 3, tmp_path / "sel")
    html = render_report(out)
    assert "<title>gitd report: random, 3 selected pairs</title>" in html
    assert '<h2 id="pairs">Selected pairs (3)</h2>' in html
    assert html.count("selected (a real pair)") == 3
    assert "<b>distilled</b>" not in html and "<b>medoid source</b>" not in html
    nav = re.search(r"<nav>(.*?)</nav>", html).group(1)
    assert "#clusters" not in nav and 'id="clusters"' not in html
    assert "#pairs" in nav and "#retrieval" in nav


def test_a_distillation_names_its_source_by_method(tmp_path):
    pairs = [OutputPair(Image.new("RGB", (32, 32)), ["c"], {"source_image": "gone.png",
                                                           "cluster_size": 4})]
    for method, label in (("gitd", "medoid source"), ("pds", "nearest source of the prototype"),
                          ("edge", "source of the prompt")):
        out = write_output(tmp_path / method, pairs, {"method": method})
        html = render_report(out)
        assert f"<b>{label}</b>" in html and "<b>distilled</b>" in html
        assert '<a href="#clusters">' in html
