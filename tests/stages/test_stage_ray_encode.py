"""Ray Data per-image stages (``--ray``): same bytes as in-process, resume per part, killed
workers retried. One local Ray session (2 CPUs, small object store) for the whole module."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'gitd[ray]'")

from gitd.config import make_config  # noqa: E402
from gitd.data import load_dataset  # noqa: E402
from gitd.methods import distill  # noqa: E402
from gitd.models import build_vae  # noqa: E402
from gitd.stages.arrays import ShardedRows  # noqa: E402
from gitd.stages.clara import clara  # noqa: E402
from gitd.stages.encode import encode_latents  # noqa: E402
from gitd.stages.latent_folder import PARTS, part_path  # noqa: E402
from gitd.stages.ray_encode import encode_latents_ray  # noqa: E402
from gitd.stages.ray_session import map_spans  # noqa: E402

RES = 64


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(shard_set, tmp_path_factory):
    """The stand-in shards plus one shard with an undecodable image and a caption-less one."""
    import webdataset as wds

    _, folder, _ = shard_set
    root = tmp_path_factory.mktemp("ray-shards")
    for tar in sorted(folder.glob("*.tar")):
        (root / tar.name).write_bytes(tar.read_bytes())
    with wds.TarWriter(str(root / "00009.tar")) as sink:
        sink.write({"__key__": "bad000", "jpg": b"\xff\xd8 broken jpeg", "txt": "broken"})
        sink.write({"__key__": "bad001", "png": (folder / "00000.tar").read_bytes()[:10]})
    return root


@pytest.fixture(scope="module")
def vae():
    return build_vae("tiny-sd", device="cpu", dtype=torch.float32, seed=0)


@pytest.fixture(scope="module")
def plain(shards, vae, tmp_path_factory):
    records = load_dataset(shards).records
    out = tmp_path_factory.mktemp("plain-encode")
    return records, encode_latents(records, vae, out, resolution=RES, batch_size=4,
                                   num_workers=0)


def test_ray_encode_same_bytes_resumes_per_part_and_survives_a_killed_actor(plain, vae, tmp_path,
                                                                            caplog):
    records, ref = plain
    store = encode_latents_ray(records, vae, tmp_path, resolution=RES, batch_size=4,
                               shard_rows=8, workers=1)
    assert store.sharded and len(list((tmp_path / PARTS).glob("*.npy"))) == 4  # 25 rows / 8
    assert store.latents[:].tobytes() == np.asarray(ref.latents).tobytes()
    assert np.array_equal(store.valid, ref.valid) and not store.valid[-1]
    assert [str(p) for p in store.problems] == [str(p) for p in ref.problems]
    assert "bad000" in str(store.problems[0])

    # Lose one finished part (a killed driver loses at most the parts in flight) and re-run
    # with an encoder whose process is SIGKILLed in the middle of that part: Ray restarts the
    # actor and retries the part, only that part is encoded again, and the bytes are the same.
    marker = tmp_path / "killed-once"

    def vae_that_dies_once():
        import signal

        model = build_vae("tiny-sd", device="cpu", dtype=torch.float32, seed=0)
        encode = model.encode

        def dying_encode(x):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(x)

        model.encode = dying_encode
        return model

    kept = part_path(tmp_path, 0, ".npy").stat().st_mtime_ns
    part_path(tmp_path, 2, ".json").unlink()
    with caplog.at_level(logging.INFO, logger="gitd"):
        again = encode_latents_ray(records, vae_that_dies_once, tmp_path, resolution=RES,
                                   batch_size=4, shard_rows=8, workers=1)
    assert "3 of 4 parts already done" in caplog.text
    assert marker.exists()  # the actor really was killed
    assert part_path(tmp_path, 0, ".npy").stat().st_mtime_ns == kept
    assert again.latents[:].tobytes() == np.asarray(ref.latents).tobytes()


def test_clara_assignment_as_ray_tasks_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((3000, 64)) + rng.integers(0, 6, (3000, 1)) * 3).astype(np.float16)
    files = []
    for i, (a, b) in enumerate([(0, 1000), (1000, 1700), (1700, 3000)]):
        files.append(tmp_path / f"{i}.npy")
        np.save(files[-1], X[a:b])
    ref = clara(X, 6, seed=1, sample_size=300, chunk_size=256, device="cpu")
    sharded = ShardedRows(files)
    streamed = clara(sharded, 6, seed=1, sample_size=300, chunk_size=256, device="cpu")
    on_ray = clara(sharded, 6, seed=1, sample_size=300, chunk_size=256, device="cpu",
                   mapper=map_spans)
    for res in (streamed, on_ray):
        assert np.array_equal(res.medoids, ref.medoids)
        assert res.cost == ref.cost and res.sample_costs == ref.sample_costs
        assert np.array_equal(res.labels, ref.labels)


def test_distill_on_shards_with_and_without_ray_is_identical(shards, tmp_path):
    cfg = make_config("tiny", pairs=4, seed=0, device="cpu")
    a = distill(shards, tmp_path / "plain", cfg)
    b = distill(shards, tmp_path / "ray", cfg.replace(ray="local"))
    for name in ("annotations.json", "metadata.jsonl", *(f"images/{i:04d}.png"
                                                          for i in range(4))):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((o / "manifest.json").read_text()) for o in (a, b))
    assert ma["clustering"] == mb["clustering"] and ma["stages"] == mb["stages"]
    assert ma["skipped"] == mb["skipped"]
    assert any("bad000" in s["file"] and s["kind"] == "corrupt-image" for s in mb["skipped"])
    assert any("bad001" in s["problem"] and s["kind"] == "no-caption" for s in mb["skipped"])
    # The Ray run's latents are parts; they hold the plain run's bytes.
    enc = next((tmp_path / "ray" / "work").glob("encode-*"))
    lat = ShardedRows(sorted((enc / PARTS).glob("*.npy")))[:]
    plain_lat = np.load(next((tmp_path / "plain" / "work").glob("encode-*")) / "latents.npy")
    assert lat.tobytes() == plain_lat.tobytes()
