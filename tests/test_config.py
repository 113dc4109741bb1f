"""DistillConfig: presets, overrides, validation, YAML/JSON files and precedence."""

from __future__ import annotations

import json

import pytest

from gitd.config import (FIELD_NAMES, PRESETS, DistillConfig, load_config, make_config,
                         save_config)
from gitd.errors import ConfigError


def test_paper_preset_matches_the_published_setting():
    c = DistillConfig.from_preset("paper").validate()
    assert c.diffusion_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert c.score_model == "openai/clip-vit-base-patch32"
    assert c.captioner == "Salesforce/blip2-opt-6.7b-coco"
    assert (c.resolution, c.strength, c.guidance_scale, c.num_inference_steps) == (512, 0.7, 8.0, 50)
    assert (c.num_candidates, c.num_captions, c.temperature, c.top_p) == (4, 5, 0.7, 0.9)
    assert c.negative_prompt == "cartoon, anime, painting" and c.prompt == "longest"
    assert c.dtype == "auto" and c.sample_latents is False
    assert c.cluster and c.diffusion and c.captioner_on and c.score


def test_every_preset_validates_and_tiny_is_offline():
    for name in PRESETS:
        assert DistillConfig.from_preset(name).validate().preset == name
    tiny = DistillConfig.from_preset("tiny")
    assert tiny.resolution == 64 and tiny.num_inference_steps <= 10
    assert all(m.startswith("tiny") for m in (tiny.diffusion_model, tiny.score_model,
                                             tiny.captioner))
    assert DistillConfig.from_preset("fast").captioner == "Salesforce/blip-image-captioning-base"


def test_overrides_and_unknown_names():
    c = DistillConfig.from_preset("tiny", pairs=7, num_candidates=1, score=False)
    assert (c.pairs, c.num_candidates, c.score, c.preset) == (7, 1, False, "tiny")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        DistillConfig.from_preset("huge")
    with pytest.raises(ConfigError, match="num_candidate") as err:
        DistillConfig.from_preset("tiny", num_candidate=2)
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
    ("method", "magic", "method"),
    ("score", "yes", "score must be true or false"),
    ("diffusion_model", "", "diffusion_model"),
    ("clara_samples", 0, "clara_samples"),
    ("seed", -1, "seed"),
])
def test_validate_names_the_bad_field(field, value, needle):
    cfg = DistillConfig.from_preset("tiny", **{field: value})  # constructing never fails
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    cfg = DistillConfig.from_preset("fast", pairs=13, clara_sample_size=200, work="w")
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
    assert load_config(tmp_path / "empty.yaml") == DistillConfig.from_preset("paper")


def test_field_names_are_cli_friendly():
    assert all(n.isidentifier() and n == n.lower() for n in FIELD_NAMES)
    assert {"num_candidates", "num_captions", "generate_batch_size", "caption_batch_size",
            "encode_batch_size", "encode_workers", "clara_samples", "clara_sample_size",
            "sample_latents", "negative_prompt", "max_new_tokens"} <= set(FIELD_NAMES)


def test_vae_settings_are_validated():
    with pytest.raises(ConfigError, match="cluster_space must be one of latents, features"):
        DistillConfig.from_preset("tiny", cluster_space="pixels").validate()
    with pytest.raises(ConfigError, match="vae must be a non-empty string"):
        DistillConfig.from_preset("tiny", vae=" ").validate()
    with pytest.raises(ConfigError, match="settings of method gitd; method pds"):
        DistillConfig.from_preset("tiny", method="pds", cluster_vae="x").validate()
    with pytest.raises(ConfigError, match="feature_image_size must be >= 16"):
        DistillConfig.from_preset("tiny", feature_image_size=8).validate()
    cfg = DistillConfig.from_preset("tiny", vae="madebyollin/taesd")
    assert cfg.vae_source("generate") == ("madebyollin/taesd", None, True)
    assert cfg.vae_source("cluster") == ("madebyollin/taesd", None, True)
    assert DistillConfig.from_preset("tiny").vae_source("cluster") == ("tiny-sd", None, False)
    split = DistillConfig.from_preset("paper", diffusion_revision="r1", cluster_vae="/m/taesd")
    assert split.vae_source("generate") == (split.diffusion_model, "r1", False)
    assert split.vae_source("cluster") == ("/m/taesd", None, True)
