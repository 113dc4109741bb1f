"""Caption synthesis with the tiny random-weight LLaVA: N extra captions per image, the
original first, per-image resume, and ``gitd caption`` on an existing output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gitd.data import load_dataset
from gitd.data.output import OutputPair, write_output
from gitd.errors import ConfigError, GitdError
from gitd.models import build_captioner
from gitd.models.roles import Runtime
from gitd.outdir import Inputs, OutputFolder
from gitd.stages.caption_synthesis import (EDGE_PROMPT, caption_output,
                                           caption_synthesis_stage, command_settings)
from gitd.models.roles import Models
from gitd.plan import Plan, PlanRunner
from gitd.stages.caption_synthesis import ROLE


@pytest.fixture(scope="module")
def vlm():
    return build_captioner("tiny-llava", seed=0, prompt=EDGE_PROMPT)


def images(n=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def output(tmp_path):
    """A gitd output as gitd distill writes it: through gitd.outdir, with its marker (gitd
    caption rewrites only such a folder in place, replacing it as a whole)."""
    out = tmp_path / "out"
    pairs = [OutputPair(image=im, captions=[f"original caption {i}"],
                        info={"source_id": f"src{i}", "scores": {"s": i}})
             for i, im in enumerate(images())]
    folder = OutputFolder.prepare(out, command="distill", inputs=Inputs())
    with folder.replace() as staging:
        write_output(staging, pairs, {"method": "gitd", "seed": 0, "untrained": False,
                                      "models": {}, "config": {}})
        (staging / "config.json").write_text('{"method": "gitd"}')
    return out


def test_tiny_llava_is_the_real_class_and_prompts_through_its_chat_template(vlm):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    assert isinstance(vlm.model, LlavaForConditionalGeneration)
    assert isinstance(vlm.processor, LlavaProcessor)
    assert vlm._prompt_text() == f"USER: <image>\n{EDGE_PROMPT} ASSISTANT:"
    caps = vlm.generate(images(2), num_captions=3, temperature=0.7, top_p=0.9, max_new_tokens=6,
                        seeds=[4, 5])
    assert [len(c) for c in caps] == [3, 3] and all(x.strip() for c in caps for x in c)
    # The prompt is not echoed back into the caption.
    assert not any("ASSISTANT" in x or "Describe" in x for c in caps for x in c)
    again = vlm.generate(images(2)[1:], num_captions=3, temperature=0.7, top_p=0.9,
                         max_new_tokens=6, seeds=[5])
    assert again[0] == caps[1]


def test_caption_output_keeps_the_original_first(output, vlm, tmp_path, field_loaders):
    s = command_settings("tiny", extra_captions=2)
    dest = caption_output(output, s, dest=tmp_path / "more", vlm=vlm)
    # The field's training loaders read one item per caption, three per image.
    items = field_loaders.check_output(dest)
    assert len(items) == 9 and sorted(i for _, _, i in items) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    ds = load_dataset(dest)
    assert [r.captions[0] for r in ds.records] == [f"original caption {i}" for i in range(3)]
    assert all(len(r.captions) == 3 for r in ds.records)
    manifest = json.loads((dest / "manifest.json").read_text())
    syn = manifest["caption_synthesis"]
    assert syn["extra_captions"] == 2 and syn["vlm"] == "tiny-llava"
    assert syn["vlm_prompt"] == EDGE_PROMPT
    assert syn["original_captions"] == [[f"original caption {i}"] for i in range(3)]
    assert manifest["untrained"] is True and manifest["method"] == "gitd"
    assert manifest["items"][1]["source_id"] == "src1"
    # Images are copied byte for byte.
    for a, b in zip(sorted((output / "images").iterdir()), sorted((dest / "images").iterdir())):
        assert a.read_bytes() == b.read_bytes()


def test_in_place_rerun_starts_from_the_originals(output, vlm):
    caption_output(output, command_settings("tiny", extra_captions=2), vlm=vlm)
    caption_output(output, command_settings("tiny", extra_captions=1), vlm=vlm)
    ds = load_dataset(output)
    assert all(len(r.captions) == 2 for r in ds.records)
    assert [r.captions[0] for r in ds.records] == [f"original caption {i}" for i in range(3)]


class _Counting:
    def __init__(self, vlm):
        self.vlm, self.calls = vlm, 0

    def generate(self, imgs, **kw):
        self.calls += len(imgs)
        return self.vlm.generate(imgs, **kw)


def test_resumes_per_image_after_a_crash(output, vlm, tmp_path):
    s = command_settings("tiny", extra_captions=2, vlm_batch_size=1, device="cpu")
    st = s.caption_synthesis_settings(Runtime.resolve("cpu", "float32"))
    paths = sorted((output / "images").iterdir())

    def run(work, model, on_unit=None):
        plan = Plan()
        step = plan.add("cs", st, lambda call: caption_synthesis_stage(call, paths),
                        roles={"vlm": "vlm"})
        models = Models({"vlm": ROLE}, s, "cpu", "float32", {"vlm": model})
        return PlanRunner(work, plan, "data-key", models, on_unit=on_unit).run()[step]

    whole = run(tmp_path / "w1", vlm)

    def crash(name, j):
        if j == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "w2", vlm, crash)
    counting = _Counting(vlm)
    assert run(tmp_path / "w2", counting) == whole
    assert counting.calls == 1  # images 0 and 1 were finished before the crash


def test_not_a_gitd_output_and_overlap_are_one_line_errors(output, tmp_path, vlm):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "annotations.json").write_text("[]")
    with pytest.raises(GitdError, match="not a gitd output"):
        caption_output(tmp_path / "plain", command_settings("tiny"), vlm=vlm)
    with pytest.raises(GitdError, match="never writes over its inputs"):
        caption_output(output, command_settings("tiny"), dest=output / "inner", vlm=vlm)
    with pytest.raises(ConfigError, match="extra_captions must be >= 1"):
        caption_output(output, command_settings("tiny", extra_captions=0), vlm=vlm)


def test_in_place_replaces_the_output_as_a_whole(output, vlm, tmp_path):
    """Issue 20, item 1: results.json and report.html of the captions before went on being
    reported as "this set"; now they go with the result they described."""
    from gitd.cli import main
    from gitd.outdir import claim, read_marker

    (output / "results.json").write_text('{"gitd_version": "0.1.0", "summary": {}}')
    claim(output / "results.json")  # as gitd evaluate --out OUT/results.json does
    assert main(["report", str(output), "-q"]) == 0
    before = {p.name for p in (output / "images").iterdir()}
    caption_output(output, command_settings("tiny", extra_captions=1), vlm=vlm)
    assert not (output / "results.json").exists() and not (output / "report.html").exists()
    assert (output / "config.json").read_text() == '{"method": "gitd"}'  # how the images came
    assert {p.name for p in (output / "images").iterdir()} == before
    assert (output / "work").is_dir()  # the cache stays: a re-run reuses its captions
    marker = read_marker(output)
    assert marker["written_by"] == "gitd caption" and marker["complete"] is True
    assert "annotations.json" in marker["files"] and "results.json" not in marker["files"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.gitd-")]
    assert main(["report", str(output), "-q"]) == 0
    html = (output / "report.html").read_text()
    assert 'id="no-results"' in html and "(this set)" not in html


def test_in_place_needs_a_folder_gitd_wrote(tmp_path, vlm):
    plain = tmp_path / "plain"
    write_output(plain, [OutputPair(image=images(1)[0], captions=["c"])], {"method": "gitd"})
    with pytest.raises(GitdError, match="no .gitd-output.json marker.*--out DEST"):
        caption_output(plain, command_settings("tiny"), vlm=vlm)
    assert sorted(p.name for p in plain.iterdir()) == ["annotations.json", "images",
                                                      "manifest.json", "metadata.jsonl"]
    # Elsewhere it may go: a new folder, replaced as a whole by the next run.
    dest = caption_output(plain, command_settings("tiny"), dest=tmp_path / "more", vlm=vlm)
    assert len(load_dataset(dest)[0].captions) == 2
