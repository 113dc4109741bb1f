"""Model roles: lazy building from the registry, shared components, manifest description."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gitd.models.roles import ModelRef, Models, Role, describe_roles, untrained


@dataclass(frozen=True)
class S:
    sd: str = "tiny-sd"
    sd_rev: str | None = None
    clip: str = "tiny-clip"
    seed: int = 0
    diffusion: bool = True


ROLES = {"vae": Role("vae", "sd", "sd_rev"),
         "img2img": Role("img2img", "sd", "sd_rev", shares=("vae",)),
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
    # Whether a role is used is the run's plan's business (here: /D, no img2img stage).
    d = describe_roles(ROLES, s, used={"vae"})
    assert d["img2img"]["used"] is False and d["vae"]["used"] is True
    assert d["vae"] == {"kind": "vae", "name": "tiny-sd", "revision": "abc", "source": "registry",
                        "untrained": True, "used": True}
    assert untrained(d)
    real = describe_roles({"score": Role("score", "clip")}, S(clip="openai/clip-vit-base-patch32"))
    assert real["score"]["source"] == "huggingface" and not untrained(real)
    # An unused random-weight role does not make the output untrained.
    assert not untrained({"x": {"untrained": True, "used": False}})


def test_released_models_are_built_again_given_ones_stay():
    marker = object()
    models = Models(ROLES, S(), torch.device("cpu"), torch.float32, {"score": marker})
    assert models.requires("img2img") == {"img2img", "vae"}
    vae = models.get("vae")
    models.release("vae")
    assert "vae" not in models._built
    again = models.get("vae")
    assert again is not vae and type(again) is type(vae)
    # Same seed, same random weights: a rebuilt model computes what the first one did.
    assert all(torch.equal(a, b) for a, b in zip(vae.parameters(), again.parameters()))
    models.release("score")
    assert models.get("score") is marker


def test_a_factory_builds_the_roles_model_in_another_process():
    import pickle

    s = S()
    roles = {**ROLES, "taesd": Role("vae", "sd", source=lambda s: ("tiny-sd", None,
                                                                   {"standalone": True}))}
    models = Models(roles, s, torch.device("cpu"), torch.float32)
    factory = pickle.loads(pickle.dumps(models.factory("taesd")))
    # The role's name, revision, seed, dtype and builder options travel with it.
    assert factory.args == ("vae", "tiny-sd")
    assert factory.keywords == {"device": "cpu", "dtype": torch.float32, "seed": 0,
                                "revision": None, "standalone": True}
    built = factory()
    assert all(torch.equal(a, b) for a, b in zip(built.parameters(),
                                                 models.get("taesd").parameters()))
