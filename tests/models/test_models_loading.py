"""Model folders that do not load, or load but would crash later, are one line each with the
fix (``gitd.models.loading``, ``gitd.models.diagnose``); tiny configs saved as folders stand in
for hub snapshots."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from gitd.errors import ModelUnavailableError
from gitd.models import build_captioner, build_score_model, build_vae

GEN = {"num_captions": 2, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 4, "seeds": [0]}


def test_outdated_blip2_folder_is_one_line_naming_the_fix(tmp_path, tiny_blip2):
    old = tiny_blip2(tmp_path / "old", updated=False)
    with pytest.raises(ModelUnavailableError) as err:
        build_captioner(str(old))
    msg = str(err.value)
    assert "\n" not in msg and "is outdated" in msg and str(old) in msg
    assert "config image_token_index" in msg and "processor num_query_tokens" in msg
    new = tiny_blip2(tmp_path / "new", updated=True)
    caps = build_captioner(str(new)).generate([Image.new("RGB", (40, 40), "red")], **GEN)
    assert len(caps[0]) == 2 and all(caps[0])


def test_without_the_check_the_outdated_snapshot_crashes_in_generate(tmp_path, tiny_blip2):
    """What the check prevents (issue 19, item 2): transformers 5 fails inside generate."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gitd.models.captioner import Captioner

    old = str(tiny_blip2(tmp_path / "old", updated=False))
    cap = Captioner(AutoModelForImageTextToText.from_pretrained(old).eval(),
                    AutoProcessor.from_pretrained(old), name="old")
    with pytest.raises(TypeError):
        cap.generate([Image.new("RGB", (40, 40), "red")], **GEN)


def test_outdated_hub_snapshot_online_follows_the_hub_offline_names_the_command(
        local_hub, tmp_path, monkeypatch, tiny_blip2):
    old = local_hub.add_commit("org/blip2", tiny_blip2(tmp_path / "old", updated=False))
    with pytest.raises(ModelUnavailableError, match="is outdated"):
        build_captioner("org/blip2")  # the hub itself has only the old files
    # The hub's files are updated: online, the new commit is loaded and works.
    local_hub.add_commit("org/blip2", tiny_blip2(tmp_path / "new", updated=True))
    cap = build_captioner("org/blip2")
    assert cap.processor.num_query_tokens == 4
    # Offline with the old commit pinned in the cache: one line with the refresh command.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        build_captioner("org/blip2", revision=old)
    assert "gitd fetch --model captioner=org/blip2" in str(err.value)


def test_outdated_llava_processor_is_one_line(tmp_path):
    from gitd.models import tiny

    llava = tiny.build_tiny_llava(device="cpu", dtype=torch.float32, prompt="Describe it.")
    llava.model.save_pretrained(tmp_path / "llava")
    llava.processor.patch_size = None  # as llava-hf processors were before their 2024 update
    llava.processor.save_pretrained(tmp_path / "llava")
    with pytest.raises(ModelUnavailableError, match="lacks processor patch_size"):
        build_captioner(str(tmp_path / "llava"), prompt="Describe it.")


def _tiny_clip_folder(folder):
    from transformers import CLIPProcessor

    from gitd.models import tiny

    sm = tiny.build_tiny_score_model(device="cpu", dtype=torch.float32)
    sm.model.save_pretrained(folder)
    CLIPProcessor(image_processor=sm.image_processor, tokenizer=sm.tokenizer).save_pretrained(
        folder)
    return folder


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ModelUnavailableError, match="is not a model folder: it has no "
                                                    "config.json") as err:
        build_score_model(str(tmp_path / "photos"))
    assert "\n" not in str(err.value)
    with pytest.raises(ModelUnavailableError, match="it has no vae/config.json|it has no "
                                                    "config.json"):
        build_vae(str(tmp_path / "photos"))


def test_a_truncated_safetensors_file_is_named(tmp_path):
    folder = _tiny_clip_folder(tmp_path / "clip")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelUnavailableError) as err:
        build_score_model(str(folder))
    msg = str(err.value)
    assert "damaged" in msg and str(weights) in msg and "truncated" in msg and "\n" not in msg


def test_an_incompatible_config_and_a_missing_package(tmp_path):
    folder = _tiny_clip_folder(tmp_path / "clip")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "clip-from-2031"}))
    with pytest.raises(ModelUnavailableError, match="config is not one the installed "
                                                    "libraries") as err:
        build_score_model(str(folder))
    assert "transformers" in str(err.value)
    # A 4-bit checkpoint needs bitsandbytes, which is not installed here.
    pytest.importorskip("transformers")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    (folder / "config.json").write_text(json.dumps({**cfg, "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True}}))
    with pytest.raises(ModelUnavailableError, match="needs a Python package that is not "
                                                    "installed .*bitsandbytes"):
        build_score_model(str(folder))
