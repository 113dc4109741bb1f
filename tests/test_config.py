"""Distillation settings from presets, config files and flags: precedence, validation, files."""

from __future__ import annotations

import json

import pytest

from gitd.config import distill_fields, load_config, make_config, save_config
from gitd.errors import ConfigError
from gitd.registry import get_method


def test_paper_preset_matches_the_published_setting():
    c = make_config("paper").validate()
    assert c.diffusion_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert c.score_model == "openai/clip-vit-base-patch32"
    assert c.captioner == "Salesforce/blip2-opt-6.7b-coco"
    assert (c.resolution, c.strength, c.guidance_scale, c.num_inference_steps) == (512, 0.7, 8.0, 50)
    assert (c.num_candidates, c.num_captions, c.temperature, c.top_p) == (4, 5, 0.7, 0.9)
    assert c.negative_prompt == "cartoon, anime, painting" and c.prompt == "longest"
    assert c.dtype == "auto" and c.sample_latents is False
    assert c.cluster and c.diffusion and c.captioner_on and c.score


def test_every_preset_validates_and_tiny_is_offline():
    for method in ("gitd", "pds"):
        for name in get_method(method).presets:
            assert make_config(name, method=method).validate().preset == name
    tiny = make_config("tiny")
    assert tiny.resolution == 64 and tiny.num_inference_steps <= 10
    assert all(m.startswith("tiny") for m in (tiny.diffusion_model, tiny.score_model,
                                             tiny.captioner))
    assert make_config("fast").captioner == "Salesforce/blip-image-captioning-base"


def test_overrides_and_unknown_names():
    c = make_config("tiny", pairs=7, num_candidates=1, score=False)
    assert (c.pairs, c.num_candidates, c.score, c.preset) == (7, 1, False, "tiny")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        make_config("huge")
    with pytest.raises(ConfigError, match="num_candidate") as err:
        make_config("tiny", num_candidate=2)
    assert "num_candidates" in str(err.value)  # the known names are listed


@pytest.mark.parametrize("field,value,needle", [
    ("pairs", 0, "pairs must be >= 1, got 0"),
    ("pairs", 2.5, "pairs must be an integer"),
    ("strength", 0.0, "strength must be in (0, 1]"),
    ("strength", 1.5, "strength"),
    ("num_inference_steps", 0, "num_inference_steps"),
    ("num_candidates", 0, "num_candidates"),
    ("num_captions", -1, "num_captions"),
    ("top_p", 0, "top_p"),
    ("top_p", 1.01, "top_p"),
    ("temperature", 0, "temperature"),
    ("guidance_scale", -1, "guidance_scale"),
    ("resolution", 100, "multiple of 8"),
    ("prompt", "shortest", "prompt must be one of"),
    ("dtype", "int8", "dtype"),
    ("score", "yes", "score must be true or false"),
    ("diffusion_model", "", "diffusion_model"),
    ("clara_samples", 0, "clara_samples"),
    ("seed", -1, "seed"),
])
def test_validate_names_the_bad_field(field, value, needle):
    cfg = make_config("tiny", **{field: value})  # constructing never fails
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    cfg = make_config("fast", pairs=13, clara_sample_size=200, work="w")
    path = tmp_path / f"cfg{suffix}"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert load_config(path).to_dict() == cfg.to_dict()


def test_file_names_a_preset_plus_overrides_and_flags_win(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("preset: tiny\npairs: 9\nstrength: 0.5\n")
    c = load_config(path)
    assert (c.preset, c.pairs, c.strength, c.resolution) == ("tiny", 9, 0.5, 64)
    # preset < file < flags; an explicit --preset beats the file's.
    c = make_config(config_file=path, pairs=3)
    assert (c.preset, c.pairs, c.strength) == ("tiny", 3, 0.5)
    c = make_config(preset="fast", config_file=path)
    assert (c.preset, c.pairs, c.resolution) == ("fast", 9, 384)
    assert make_config().preset == "paper"


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pairs": 3, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown setting.*colour.*known settings"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("pairs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(lst)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == make_config("paper")


def test_field_names_are_cli_friendly():
    names = distill_fields()
    assert all(n.isidentifier() and n == n.lower() for n in names)
    assert {"num_candidates", "num_captions", "generate_batch_size", "caption_batch_size",
            "encode_batch_size", "encode_workers", "clara_samples", "clara_sample_size",
            "sample_latents", "negative_prompt", "max_new_tokens"} <= set(names)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError,
                       match="unknown distill method 'magic'; known: edge, gitd, pds"):
        make_config("tiny", method="magic")


def test_settings_of_another_method():
    # A flag of another method is an error; a file key of another method (files written before
    # each method had its own settings carry all of them) is ignored.
    with pytest.raises(ConfigError, match="noise_level: not a setting of method gitd"):
        make_config("tiny", noise_level=3)


def test_old_flat_config_file_with_every_methods_fields_loads(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"method": "pds", "preset": "tiny", "pairs": 4, "strength": 0.5,
                                "cluster": True, "noise_level": 3}))
    c = load_config(path)
    assert (c.method, c.pairs, c.noise_level) == ("pds", 4, 3)
    assert not hasattr(c, "strength")


def test_method_settings_are_frozen():
    c = make_config("tiny")
    with pytest.raises(AttributeError):
        c.pairs = 3
    assert c.replace(pairs=3).pairs == 3


def test_vae_settings_are_validated():
    with pytest.raises(ConfigError, match="cluster_space must be one of"):
        make_config("tiny", cluster_space="pixels").validate()
    with pytest.raises(ConfigError, match="vae "):
        make_config("tiny", vae=" ").validate()
    with pytest.raises(ConfigError, match="cluster_vae: not a setting of method pds"):
        make_config("tiny", method="pds", cluster_vae="x")
    with pytest.raises(ConfigError, match="feature_image_size "):
        make_config("tiny", feature_image_size=8).validate()
    cfg = make_config("tiny", vae="madebyollin/taesd")
    assert cfg.vae_source("generate") == ("madebyollin/taesd", None, {"standalone": True})
    assert cfg.vae_source("cluster") == ("madebyollin/taesd", None, {"standalone": True})
    assert make_config("tiny").vae_source("cluster") == ("tiny-sd", None, {})
    split = make_config("paper", diffusion_revision="r1", cluster_vae="/m/taesd")
    assert split.vae_source("generate") == (split.diffusion_model, "r1", {})
    assert split.vae_source("cluster") == ("/m/taesd", None, {"standalone": True})
