"""The micro-batch: chosen from (fake) free-memory figures, and exact whatever it is."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gitd.errors import ConfigError
from gitd.stages.finetune import FinetuneSettings, Trainer, build_edge_models, finetune
from gitd.stages.finetune import train as train_module
from gitd.stages.finetune.memory import (
    choose_micro_batch,
    fixed_micro_batch,
    per_pair_from_probe,
    split_sizes,
)
from gitd.stages.finetune.state import read_trained
from gitd.stages.finetune.train import make_accelerator

GIB = 1024 ** 3


def test_choose_micro_batch_from_free_memory():
    # 20 GiB free, 2 GiB fixed, 0.6 GiB a pair: ((20 - 1) * 0.9 - 2) / 0.6 = 25 fit, so 128
    # pairs take 6 passes, evened out to 22 pairs each.
    assert choose_micro_batch(20 * GIB, int(0.6 * GIB), 128, fixed=2 * GIB) == 22
    assert choose_micro_batch(80 * GIB, int(0.1 * GIB), 128) == 128   # all at once
    assert choose_micro_batch(2 * GIB, 4 * GIB, 128) == 1               # never below 1
    assert choose_micro_batch(6 * GIB, 1 * GIB, 16) == 4                # 4 fit: 4 x 4


def test_probe_figures_and_even_splits():
    assert per_pair_from_probe(3 * GIB, 3 * GIB + GIB // 2) == (int(2.5 * GIB), GIB // 2)
    assert split_sizes(10, 4) == [4, 3, 3]
    assert split_sizes(128, 22) == [22, 22, 21, 21, 21, 21]
    assert split_sizes(8, 8) == [8] and split_sizes(8, 100) == [8]


def test_settings_fix_the_micro_batch_or_leave_it_to_auto():
    assert fixed_micro_batch("auto", 1, 128) is None
    assert fixed_micro_batch(16, 1, 128) == 16
    assert fixed_micro_batch(500, 1, 128) == 128
    assert fixed_micro_batch("auto", 4, 128) == 32   # the old flag still works
    with pytest.raises(ConfigError, match="not both"):
        fixed_micro_batch(16, 4, 128)
    with pytest.raises(ConfigError, match="divisible"):
        fixed_micro_batch("auto", 3, 128)
    with pytest.raises(ConfigError, match="micro_batch must be a positive integer or auto"):
        FinetuneSettings.from_preset("tiny", micro_batch=0).validate()


def settings(**kw):
    return FinetuneSettings.from_preset("tiny", device="cpu", **kw)


def models_for(s):
    return build_edge_models(s.diffusion_model, s.clip_model, device="cpu",
                             frozen_dtype=torch.float32, seed=s.seed)


def test_uneven_micro_batches_give_the_full_batch_gradient(ft_data):
    """Gradient caching with micro-batches of 3 + 3 + 2: the same gradient as one batch of 8
    (the contrastive and diversity terms still see all 8 pairs)."""
    from gitd.data import load_dataset
    from gitd.data.images import open_rgb
    from gitd.stages.vae_encoding import preprocess
    from gitd.stages.finetune.objective import pair_seed

    recs = load_dataset(ft_data).records[:8]
    pixels = torch.stack([preprocess(open_rgb(r.image), 64) for r in recs])
    caps = [r.captions[0] for r in recs]
    seeds = [pair_seed(0, 0, i) for i in range(8)]
    s = settings()
    whole, split = models_for(s), models_for(s)
    t_whole = Trainer(whole, s, make_accelerator(s))
    t_split = Trainer(split, s, make_accelerator(s))
    r_whole = t_whole.step([(pixels, caps, seeds)])
    parts, lo = [], 0
    for n in split_sizes(8, 3):
        parts.append((pixels[lo:lo + n], caps[lo:lo + n], seeds[lo:lo + n]))
        lo += n
    assert [len(p[1]) for p in parts] == [3, 3, 2]
    r_split = t_split.step(parts)
    assert r_split["loss"] == pytest.approx(r_whole["loss"], rel=1e-6)
    grads = [(n, a.grad, b.grad) for (n, a), (_, b) in zip(whole.trainable(), split.trainable())]
    assert sum(a is not None for _, a, _ in grads) > len(grads) // 2
    for name, a, b in grads:
        if a is None:
            assert b is None or not b.any(), name
            continue
        # float32 sums the 8 pairs in another order (3 + 3 + 2): a few units in the last
        # place of the larger terms, up to about 1e-5 of a tensor whose own gradient is small.
        # Plain accumulation of each micro-batch's own loss is off by 12% (median 41%) of each
        # tensor's scale here, measured with these models and pairs.
        scale = a.abs().max().clamp_min(1e-12)
        assert (a - b).abs().max() <= 1e-4 * scale, name


def test_auto_on_cuda_measures_two_probes_and_fits_the_free_memory(ft_data, monkeypatch):
    """The orchestration of --micro-batch auto with a fake GPU: probes of 1 and 2 pairs cost
    3.0 and 3.5 GiB, 12 GiB are free."""
    from gitd.data import load_dataset
    from gitd.models import gpu

    probes = []

    def probe_peak(pixels, captions, seeds):
        probes.append(len(captions))
        assert pixels.shape[0] == len(captions) == len(seeds)
        return int(2.5 * GIB) + len(captions) * GIB // 2

    monkeypatch.setattr(gpu, "free_memory", lambda device: 12 * GIB)
    monkeypatch.setattr(gpu, "release_memory", lambda device=None: None)
    fake = SimpleNamespace(local_batch=128, probe_peak=probe_peak,
                           acc=SimpleNamespace(device=torch.device("cuda")))
    ds = load_dataset(ft_data)
    pairs = [(r, c) for r in ds.records for c in r.captions]
    micro = train_module._auto_micro_batch(fake, pairs, [r.image for r, _ in pairs],
                                           settings())
    assert probes == [1, 2]
    # ((12 - 1) * 0.9 - 2.5) / 0.5 = 14 fit; 128 pairs in 10 passes of at most 13.
    assert micro == choose_micro_batch(12 * GIB, GIB // 2, 128, fixed=int(2.5 * GIB)) == 13
    # Off CUDA, auto is the whole batch.
    cpu = SimpleNamespace(local_batch=8, acc=SimpleNamespace(device=torch.device("cpu")))
    assert train_module._auto_micro_batch(cpu, pairs, [], settings()) == 8


def test_a_run_with_micro_batches_trains_the_weights_of_one_batch(ft_data, tmp_path):
    whole = finetune(ft_data, tmp_path / "whole", settings(epochs=1))
    split = finetune(ft_data, tmp_path / "split", settings(epochs=1, micro_batch=3))
    a, _ = read_trained(whole)
    b, _ = read_trained(split)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    import json

    summary = json.loads((split / "run.json").read_text())
    assert summary["micro_batches"] == [3, 3, 2]
    # micro_batch changes how, not what: the same settings key, so either resumes the other.
    assert json.loads((whole / "settings.json").read_text())["key"] == \
        json.loads((split / "settings.json").read_text())["key"]
