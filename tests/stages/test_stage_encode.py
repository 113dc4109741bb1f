import json

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")

from gitd.data.records import Record
from gitd.errors import ConfigError, DataError
from gitd.stages.clara import clara
from gitd.stages.encode import encode_latents
from gitd.stages.latent_folder import LatentStore
from gitd.stages.vae_encoding import latent_shape, preprocess

RES = 32


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8,
        latent_channels=4, sample_size=RES).eval()


def make_records(folder, n, bad=()):
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        if i in bad:
            p.write_bytes(b"not an image")
        else:
            rng = np.random.default_rng(i)
            h, w = 30 + (i * 7) % 40, 30 + (i * 13) % 50
            Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(p)
        recs.append(Record(f"img{i:03d}.png", p, (f"caption {i}",), row=10 + i))
    return recs


def test_preprocess_resizes_shorter_side_and_centre_crops():
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 20:60] = 255  # white centre band, exactly the centre crop after resize to 16x32
    x = preprocess(Image.fromarray(arr), 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[:, :, 2:14], torch.ones(3, 16, 12), atol=1e-6)
    ref = Image.fromarray(arr).resize((32, 16), Image.BICUBIC).crop((8, 0, 24, 16))
    expect = torch.from_numpy(np.asarray(ref, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(x, expect)


def test_latents_are_scaled_posterior_means(tmp_path, vae):
    recs = make_records(tmp_path / "img", 6)
    store = encode_latents(recs, vae, tmp_path / "out", resolution=RES, batch_size=4,
                           num_workers=2)
    assert store.latents.shape == (6, *latent_shape(vae, RES)) == (6, 4, 16, 16)
    assert store.latents.dtype == np.float16 and store.complete and store.valid.all()
    x = torch.stack([preprocess(Image.open(r.image).convert("RGB"), RES) for r in recs])
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean.numpy() * 0.18215
    np.testing.assert_allclose(store.latents.astype(np.float32), ref, rtol=2e-3, atol=2e-4)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["ids"] == [r.id for r in recs] and index["scaling_factor"] == 0.18215
    assert index["shape"] == [6, 4, 16, 16] and index["dtype"] == "float16"
    # a plain np.load reads the file: it is a real .npy
    assert np.array_equal(np.load(tmp_path / "out" / "latents.npy"), store.latents)
    again = LatentStore.open(tmp_path / "out")
    assert again.ids == store.ids and len(again) == 6 and again.complete
    flat = again.flat()
    assert flat.shape == (6, 1024) and flat.dtype == np.float32
    np.testing.assert_array_equal(again.flat([4, 1]), flat[[4, 1]])


def test_bad_image_becomes_problem_not_crash(tmp_path, vae):
    recs = make_records(tmp_path / "img", 7, bad={2, 5})
    (tmp_path / "img" / "img006.png").unlink()
    store = encode_latents(recs, vae, tmp_path / "out", resolution=RES, batch_size=3,
                           num_workers=0)
    assert store.valid.tolist() == [True, True, False, True, True, False, False]
    assert [(p.row, p.kind) for p in store.problems] == [
        (12, "corrupt-image"), (15, "corrupt-image"), (16, "missing-image")]
    assert all(str(recs[i].image) == store.problems[j].file for j, i in enumerate((2, 5, 6)))
    assert not store.latents[2].any() and store.latents[3].any()
    assert store.valid_indices.tolist() == [0, 1, 3, 4]
    reopened = LatentStore.open(tmp_path / "out")
    assert reopened.problems == store.problems and reopened.valid.tolist() == store.valid.tolist()
    assert reopened.matrix().shape == (4, 1024)
    res = clara(reopened.matrix(), 2, seed=0)
    assert set(reopened.valid_indices[res.medoids]) <= {0, 1, 3, 4}


def test_all_images_bad_is_one_clear_error(tmp_path, vae):
    recs = make_records(tmp_path / "img", 3, bad={0, 1, 2})
    with pytest.raises(DataError, match="none of the 3 images"):
        encode_latents(recs, vae, tmp_path / "out", resolution=RES, num_workers=0)


def test_resume_after_crash_gives_identical_file(tmp_path, vae):
    recs = make_records(tmp_path / "img", 11, bad={4})
    full = encode_latents(recs, vae, tmp_path / "full", resolution=RES, batch_size=3,
                          num_workers=0)
    expect = np.array(full.latents)

    part = encode_latents(recs, vae, tmp_path / "cut", resolution=RES, batch_size=3,
                          num_workers=0, max_batches=2)
    assert part.rows_done == 6 and not part.complete
    assert part.valid.tolist()[:7] == [True] * 4 + [False, True, False]

    def crash(batch, rows):
        if batch == 1:
            raise KeyboardInterrupt  # killed after the third batch reached disk

    with pytest.raises(KeyboardInterrupt):
        encode_latents(recs, vae, tmp_path / "cut", resolution=RES, batch_size=3,
                       num_workers=0, on_batch=crash)
    assert LatentStore.open(tmp_path / "cut").rows_done == 9

    seen = []
    done = encode_latents(recs, vae, tmp_path / "cut", resolution=RES, batch_size=3,
                          num_workers=0, on_batch=lambda b, rows: seen.append(rows))
    assert seen == [11]  # only the last batch was left
    assert done.complete
    np.testing.assert_array_equal(np.array(done.latents), expect)
    assert done.problems == full.problems and done.valid.tolist() == full.valid.tolist()


def test_changed_settings_start_again(tmp_path, vae):
    recs = make_records(tmp_path / "img", 4)
    encode_latents(recs, vae, tmp_path / "out", resolution=RES, num_workers=0, max_batches=0)
    store = encode_latents(recs[:3], vae, tmp_path / "out", resolution=16, num_workers=0)
    assert store.latents.shape == (3, 4, 8, 8) and store.complete
    assert LatentStore.open(tmp_path / "out").ids == [r.id for r in recs[:3]]


def test_sampled_latents_are_seeded_per_image(tmp_path, vae):
    recs = make_records(tmp_path / "img", 5)
    kw = dict(resolution=RES, num_workers=0, sample=True)
    a = np.array(encode_latents(recs, vae, tmp_path / "a", batch_size=2, seed=3, **kw).latents)
    b = np.array(encode_latents(recs, vae, tmp_path / "b", batch_size=5, seed=3, **kw).latents)
    c = np.array(encode_latents(recs, vae, tmp_path / "c", batch_size=5, seed=4, **kw).latents)
    m = np.array(encode_latents(recs, vae, tmp_path / "m", batch_size=5, resolution=RES,
                                num_workers=0).latents)
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
    assert not np.allclose(a, c, atol=1e-2) and not np.allclose(a, m, atol=1e-2)


def test_bad_settings(tmp_path, vae):
    recs = make_records(tmp_path / "img", 2)
    with pytest.raises(ConfigError, match="resolution must be a multiple of 2"):
        encode_latents(recs, vae, tmp_path / "out", resolution=33, num_workers=0)
    with pytest.raises(ConfigError, match="batch_size"):
        encode_latents(recs, vae, tmp_path / "out", resolution=RES, batch_size=0)
    with pytest.raises(DataError, match="no images"):
        encode_latents([], vae, tmp_path / "out", resolution=RES)
    with pytest.raises(DataError, match="not an encoded-latents folder"):
        LatentStore.open(tmp_path / "nothing")
