"""Model roles: lazy building from the registry, shared components, manifest description."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gitd.models.roles import (
    ModelRef,
    Models,
    Role,
    describe_roles,
    roles_needed_after,
    untrained,
)


@dataclass(frozen=True)
class S:
    sd: str = "tiny-sd"
    sd_rev: str | None = None
    clip: str = "tiny-clip"
    seed: int = 0
    diffusion: bool = True


ROLES = {"vae": Role("vae", "sd", "sd_rev"),
         "img2img": Role("img2img", "sd", "sd_rev", shares=("vae",), used=lambda s: s.diffusion),
         "score": Role("score", "clip")}


def test_models_are_built_once_on_first_use_and_shared():
    models = Models(ROLES, S(), torch.device("cpu"), torch.float32)
    assert models._built == {}
    pipe = models.get("img2img")
    assert pipe.vae is models.get("vae")          # the img2img pipeline reuses the VAE
    assert models.get("img2img") is pipe
    assert set(models._built) == {"vae", "img2img"}  # the score model was never needed


def test_given_models_are_used_as_they_are():
    marker = object()
    models = Models(ROLES, S(), torch.device("cpu"), torch.float32, {"score": marker})
    assert models.get("score") is marker


def test_refs_and_description_follow_the_settings():
    s = S(sd_rev="abc", diffusion=False)
    # Random-weight models are built from the seed: it is part of what a key sees of them.
    assert ROLES["img2img"].ref(s) == ModelRef("img2img", "tiny-sd", "abc", seed=0)
    real = S(sd="stable-diffusion-v1-5/stable-diffusion-v1-5", seed=7)
    assert ROLES["vae"].ref(real).seed is None
    d = describe_roles(ROLES, s)
    assert d["img2img"]["used"] is False and d["vae"]["used"] is True
    assert d["vae"] == {"kind": "vae", "name": "tiny-sd", "revision": "abc", "source": "registry",
                        "untrained": True, "used": True}
    assert untrained(d)
    real = describe_roles({"score": Role("score", "clip")}, S(clip="openai/clip-vit-base-patch32"))
    assert real["score"]["source"] == "huggingface" and not untrained(real)
    # An unused random-weight role does not make the output untrained.
    assert not untrained({"x": {"untrained": True, "used": False}})


# -- releasing models a run no longer needs ----------------------------------------------------
PLAN = ["encode", "cluster", "generate", "caption", "caption_synthesis"]
USES = {"encode": ("vae",), "generate": ("img2img", "score"), "caption": ("captioner", "score"),
        "caption_synthesis": ("vlm",)}
ALL = {**ROLES, "captioner": Role("captioner", "sd"), "vlm": Role("captioner", "sd")}


def test_roles_needed_after_each_stage():
    need = lambda stage: roles_needed_after(stage, PLAN, USES, ALL)
    # img2img shares the VAE: it stays until generation is over.
    assert need("encode") == {"img2img", "vae", "score", "captioner", "vlm"}
    assert need("generate") == {"captioner", "score", "vlm"}
    assert need("caption") == {"vlm"}
    assert need("caption_synthesis") == set()
    # A stage the plan does not hold (an ablation) releases nothing any stage uses.
    assert need("sample") == {"img2img", "vae", "score", "captioner", "vlm"}


def test_release_drops_the_model_and_a_later_get_builds_it_again():
    import gc
    import weakref

    models = Models(ROLES, S(), torch.device("cpu"), torch.float32, uses={"generate": ("img2img",)})
    pipe = models.get("img2img")
    alive = weakref.ref(pipe.unet)
    del pipe
    assert models.release("img2img") is True
    assert models.release("img2img") is False
    gc.collect()
    # the VAE role still holds the shared VAE, but nothing holds the UNet any more
    assert alive() is None and models.built() == ["vae"]
    assert models.get("img2img").vae is models.get("vae")


def test_release_after_keeps_what_later_stages_use():
    models = Models(ROLES, S(), torch.device("cpu"), torch.float32,
                    uses={"encode": ("vae",), "generate": ("img2img", "score")})
    models.get("vae")
    assert models.release_after("encode", ["encode", "generate"]) == []  # img2img shares it
    models.get("img2img")
    models.get("score")
    assert sorted(models.release_after("generate", ["encode", "generate"])) == \
        ["img2img", "score", "vae"]
    assert models.built() == []


def test_a_released_given_model_comes_back_as_given():
    marker = object()
    models = Models(ROLES, S(), torch.device("cpu"), torch.float32, {"score": marker})
    assert models.release("score")
    assert models.get("score") is marker

