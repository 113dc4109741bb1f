"""Ray stays optional: a clear one-line error without it, and --ray parses as documented."""

from __future__ import annotations

import sys

import pytest

from gitd.cli import build_parser
from gitd.errors import GitdError
from gitd.stages import raydata


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(GitdError, match=r"pip install 'gitd\[ray\]'"):
        raydata.connect("local")


@pytest.mark.parametrize("argv, expected", [([], None), (["--ray"], ""),
                                            (["--ray", "local"], "local"),
                                            (["--ray", "10.0.0.5:6379"], "10.0.0.5:6379")])
def test_ray_flag(argv, expected):
    args = build_parser().parse_args(["distill", "d", "--pairs", "2", "--out", "o", *argv])
    assert getattr(args, "ray", None) == expected


def test_cluster_resolution_is_validated():
    from gitd.config import make_config
    from gitd.errors import ConfigError

    with pytest.raises(ConfigError, match="cluster_resolution must be a multiple of 8"):
        make_config("tiny", cluster_resolution=100).validate()
    args = build_parser().parse_args(["distill", "d", "--pairs", "2", "--out", "o",
                                      "--cluster-resolution", "256"])
    assert args.cluster_resolution == 256


def test_a_folder_with_both_latent_layouts_opens_the_complete_one(tmp_path):
    """A Ray run interrupted and then finished without --ray (or the other way round) leaves
    both layouts in the stage folder: the complete one is the result."""
    import numpy as np

    from gitd.stages.encode import INDEX, LATENTS, PARTS, LatentStore, part_path
    from gitd.store import atomic_write_json

    lat = np.arange(6 * 4, dtype=np.float16).reshape(6, 4, 1, 1)
    base = {"ids": [f"r{i}" for i in range(6)], "shape": [6, 4, 1, 1], "dtype": "float16",
            "scaling_factor": 1.0, "settings": {}}
    np.save(tmp_path / LATENTS, lat)
    atomic_write_json(tmp_path / INDEX, base)
    atomic_write_json(tmp_path / "progress.json", {"rows_done": 6, "invalid": [], "problems": []})
    atomic_write_json(tmp_path / PARTS / INDEX, {**base, "shard_rows": 4})
    np.save(part_path(tmp_path, 0, ".npy"), lat[:4])
    atomic_write_json(part_path(tmp_path, 0, ".json"), {"invalid": [], "problems": []})
    store = LatentStore.open(tmp_path)  # parts: 1 of 2 done; the single file: complete
    assert store.complete and not store.sharded
    np.save(part_path(tmp_path, 1, ".npy"), lat[4:])
    atomic_write_json(part_path(tmp_path, 1, ".json"), {"invalid": [5], "problems": []})
    store = LatentStore.open(tmp_path)
    assert store.sharded and store.complete and store.valid.tolist() == [True] * 5 + [False]
    assert store.latents[:].tobytes() == lat.tobytes()
    assert np.array_equal(store.matrix(), lat.reshape(6, 4)[:5])
    # A damaged part (cut short, or its record emptied) is not done: it is encoded again.
    from gitd.stages.encode import part_done

    index = {**base, "shard_rows": 4}
    assert part_done(tmp_path, index, 1) == {"invalid": [5], "problems": []}
    data = part_path(tmp_path, 1, ".npy").read_bytes()
    part_path(tmp_path, 1, ".npy").write_bytes(data[:-3])
    assert part_done(tmp_path, index, 1) is None
    assert not LatentStore.open(tmp_path).sharded  # back to the complete single file
    part_path(tmp_path, 1, ".npy").write_bytes(data)
    part_path(tmp_path, 0, ".json").write_text("{")
    assert part_done(tmp_path, index, 0) is None
