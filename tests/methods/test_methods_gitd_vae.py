"""GITD with a chosen VAE (--vae), a separate clustering VAE (--cluster-vae) and clustering in
the coreset baselines' feature space (--cluster-space features), tiny preset, CPU, offline.

The last test is the held-out check with the real TAESD weights ($GITD_TAESD): the medoids of
`gitd distill --preset tiny --vae TAESD --no-diffusion --no-captioner` come from real SD 1.x
latents that agree with an independent TAESD load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")

from gitd.config import make_config
from gitd.data import load_dataset
from gitd.methods import distill
from gitd.stages.clara import clara
from gitd.stages.latent_folder import LatentStore
from gitd.stages.vae_encoding import preprocess, vae_latents

PAIRS = 4


def tiny(**overrides):
    return make_config("tiny", pairs=PAIRS, seed=0, device="cpu", **overrides)


@pytest.fixture(scope="module")
def tiny_taesd(tmp_path_factory, small_tiny_vae) -> Path:
    """A small random-weight AutoencoderTiny folder, laid out like madebyollin/taesd."""
    folder = tmp_path_factory.mktemp("taesd") / "taesd"
    small_tiny_vae().save_pretrained(folder)
    return folder


def stage_dir(out: Path, name: str) -> Path:
    manifest = json.loads((out / "manifest.json").read_text())
    return Path(manifest["work"]) / f"{name}-{manifest['stages'][name]}"


def direct_latents(vae, paths, resolution) -> np.ndarray:
    x = torch.stack([preprocess(Image.open(p).convert("RGB"), resolution) for p in paths])
    with torch.inference_mode():
        return vae_latents(vae, x).numpy()


def test_cluster_vae_clusters_its_latents_and_only_medoids_use_the_generation_vae(
        shapes, tiny_taesd, tmp_path):
    from gitd.models import build_vae

    out = tmp_path / "out"
    distill(shapes, out, tiny(cluster_vae=str(tiny_taesd)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"encode", "cluster", "encode-medoids", "img2img",
                                       "caption"}
    assert manifest["clustering"]["space"] == "latents"
    assert manifest["clustering"]["vae"] == str(tiny_taesd)
    assert manifest["models"]["cluster_vae"]["name"] == str(tiny_taesd)
    assert manifest["models"]["vae"]["name"] == "tiny-sd"
    every = LatentStore.open(stage_dir(out, "encode"))
    assert every.index["settings"]["vae"]["class"] == "AutoencoderTiny" and len(every) == 40
    medoids = LatentStore.open(stage_dir(out, "encode-medoids"))
    assert medoids.index["settings"]["vae"]["class"] == "AutoencoderKL"
    assert medoids.ids == manifest["clustering"]["medoid_ids"]
    # The medoids' img2img latents are the generation VAE's, scaled once.
    dataset = load_dataset(shapes)
    paths = [dataset.records[[r.id for r in dataset].index(i)].image for i in medoids.ids]
    gen = build_vae("tiny-sd", seed=0)
    np.testing.assert_allclose(medoids.latents, direct_latents(gen, paths, 64), atol=2e-3)
    assert len(list((out / "images").glob("*.png"))) == PAIRS

    # The clustering VAE is part of the cache keys: the default run encodes and clusters anew.
    plain = tmp_path / "plain"
    distill(shapes, plain, tiny(), work=out / "work")
    keys = json.loads((plain / "manifest.json").read_text())["stages"]
    assert keys["encode"] != manifest["stages"]["encode"]
    assert keys["cluster"] != manifest["stages"]["cluster"]
    assert "encode-medoids" not in keys


def test_cluster_space_features_picks_clara_medoids_of_the_coreset_features(shapes, tmp_path):
    from gitd.stages.pair_features import pair_features

    out = tmp_path / "out"
    distill(shapes, out, tiny(cluster_space="features", feature_image_size=32, diffusion=False,
                              captioner_on=False))
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"features", "cluster"}  # no VAE at all
    assert manifest["clustering"]["space"] == "features"
    assert manifest["clustering"]["feature_encoders"]["image"] == "efficientnet_lite0"
    dataset = load_dataset(shapes)
    feats = pair_features(dataset, image_size=32, cache=False, device="cpu")
    expect = clara(feats, PAIRS, seed=0)
    assert manifest["clustering"]["medoid_ids"] == [dataset[int(i)].id for i in expect.medoids]
    # With diffusion, only the medoids are encoded with the generation VAE.
    cfg = tiny(cluster_space="features", feature_image_size=32, captioner_on=False)
    distill(shapes, tmp_path / "gen", cfg, work=out / "work")
    stages = json.loads((tmp_path / "gen" / "manifest.json").read_text())["stages"]
    assert stages["features"] == manifest["stages"]["features"]  # cached, reused
    assert len(LatentStore.open(stage_dir(tmp_path / "gen", "encode-medoids"))) == PAIRS


def test_held_out_check_taesd_medoids_come_from_real_sd_latents(shapes, taesd_dir, tmp_path):
    from gitd.cli import main

    out = tmp_path / "out"
    assert main(["distill", str(shapes), "--preset", "tiny", "--vae", str(taesd_dir),
                 "--no-diffusion", "--no-captioner", "--pairs", str(PAIRS), "--out", str(out),
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["untrained"] is False  # real latents, real images, real captions
    assert manifest["models"]["vae"]["source"] == "local"
    store = LatentStore.open(stage_dir(out, "encode"))
    assert store.index["settings"]["vae"]["class"] == "AutoencoderTiny"
    assert store.latents.shape == (40, 4, 8, 8)  # the tiny preset's 64 px
    independent = diffusers.AutoencoderTiny.from_pretrained(str(taesd_dir)).eval()
    dataset = load_dataset(shapes)
    with torch.inference_mode():
        x = torch.stack([preprocess(Image.open(r.image).convert("RGB"), 64) for r in dataset])
        direct = independent.encode(x).latents.numpy()
    np.testing.assert_allclose(store.latents, direct, atol=1e-2, rtol=2e-3)
    assert 0.5 < direct.std() < 1.5  # SD's scaled range, not 0.18215 of it
    # CLARA on the independent latents (rounded as gitd stores them) picks the same medoids.
    expect = clara(direct.astype(np.float16).reshape(40, -1), PAIRS, seed=0)
    assert manifest["clustering"]["medoid_ids"] == [dataset[int(i)].id for i in expect.medoids]
