"""A method run holds each model only while a stage still needs it (issue 19 item 3)."""

from __future__ import annotations

from gitd.config import make_config
from gitd.registry import get_method


def run_recording(method_name, shapes, out, **values):
    """Run a tiny method; return, per stage, the roles held while its units were written."""
    s = make_config("tiny", method=method_name, pairs=2, seed=0, device="cpu", **values)
    method = get_method(method_name)(s)
    held: dict[str, set] = {}

    def on_unit(stage, j):
        held.setdefault(stage, set()).update(method.models.built())

    method.run(shapes, out, on_unit=on_unit)
    return method, held


def test_gitd_releases_sd_before_captioning_and_the_captioner_before_the_vlm(shapes, tmp_path):
    method, held = run_recording("gitd", shapes, tmp_path / "out", extra_captions=1)
    assert {"img2img", "vae", "score"} <= held["generate"]
    assert held["caption"] == {"captioner", "score"}
    assert held["caption_synthesis"] == {"vlm"}
    assert method.models.built() == []


def test_edge_releases_sd_before_caption_synthesis(shapes, tmp_path):
    method, held = run_recording("edge", shapes, tmp_path / "out", extra_captions=1,
                                 prompts="clara")
    assert {"sd", "vae"} <= held["sample"]
    assert held["caption_synthesis"] == {"vlm"}
    assert method.models.built() == []


def test_pds_keeps_the_score_model_for_recaptioning_only(shapes, tmp_path):
    method, held = run_recording("pds", shapes, tmp_path / "out", recaption=True)
    assert held["synthesize"] == {"unclip", "score"}
    assert held["caption"] == {"captioner", "score"}
    _, held = run_recording("pds", shapes, tmp_path / "plain")
    assert held["synthesize"] == {"unclip"}
