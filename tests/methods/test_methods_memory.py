"""A method run holds each model only while a stage still needs it (issue 19 item 3): the plan's
executor releases every role after the last stage that uses it, through ``Models.release``."""

from __future__ import annotations

from gitd.config import make_config
from gitd.methods import base
from gitd.models.roles import Models
from gitd.registry import get_method


def run_recording(monkeypatch, method_name, shapes, out, **values):
    """Run a tiny method; return, per stage, the roles held while its units were written, and
    the run's ``Models`` (the real one, recorded as the run builds it)."""
    made: list[Models] = []

    class Recorded(Models):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(base, "Models", Recorded)
    s = make_config("tiny", method=method_name, pairs=2, seed=0, device="cpu", **values)
    held: dict[str, set] = {}

    def on_unit(stage, j):
        held.setdefault(stage, set()).update(made[-1].built())

    get_method(method_name)(s).run(shapes, out, on_unit=on_unit)
    return made[-1], held


def test_gitd_releases_sd_before_captioning_and_the_captioner_before_the_vlm(
        monkeypatch, shapes, tmp_path):
    models, held = run_recording(monkeypatch, "gitd", shapes, tmp_path / "out", extra_captions=1)
    assert {"img2img", "vae", "score"} <= held["img2img"]
    assert held["caption"] == {"captioner", "score"}
    assert held["caption_synthesis"] == {"vlm"}
    assert models.built() == []


def test_edge_releases_sd_before_caption_synthesis(monkeypatch, shapes, tmp_path):
    models, held = run_recording(monkeypatch, "edge", shapes, tmp_path / "out",
                                 extra_captions=1, prompts="clara")
    assert {"sd", "vae"} <= held["text2img"]
    assert held["caption_synthesis"] == {"vlm"}
    assert models.built() == []


def test_pds_keeps_the_score_model_for_recaptioning_only(monkeypatch, shapes, tmp_path):
    _, held = run_recording(monkeypatch, "pds", shapes, tmp_path / "out", recaption=True)
    assert held["unclip"] == {"unclip", "score"}
    assert held["caption"] == {"captioner", "score"}
    _, held = run_recording(monkeypatch, "pds", shapes, tmp_path / "plain")
    assert held["unclip"] == {"unclip"}
