"""The encoded-latents folder (``gitd.stages.latent_folder``): both layouts, and damaged parts."""

from __future__ import annotations


def test_a_folder_with_both_latent_layouts_opens_the_complete_one(tmp_path):
    """A Ray run interrupted and then finished without --ray (or the other way round) leaves
    both layouts in the stage folder: the complete one is the result."""
    import numpy as np

    from gitd.stages.latent_folder import INDEX, LATENTS, PARTS, LatentStore, part_path
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
    from gitd.stages.latent_folder import part_done

    index = {**base, "shard_rows": 4}
    assert part_done(tmp_path, index, 1) == {"invalid": [5], "problems": []}
    data = part_path(tmp_path, 1, ".npy").read_bytes()
    part_path(tmp_path, 1, ".npy").write_bytes(data[:-3])
    assert part_done(tmp_path, index, 1) is None
    assert not LatentStore.open(tmp_path).sharded  # back to the complete single file
    part_path(tmp_path, 1, ".npy").write_bytes(data)
    part_path(tmp_path, 0, ".json").write_text("{")
    assert part_done(tmp_path, index, 0) is None
