"""The fine-tuning loop on the tiny models: what trains, what the objective feeds the UNet,
exact gradients over micro-batches, the run folder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from gitd.data import load_dataset
from gitd.data.images import open_rgb
from gitd.errors import ConfigError, GitdError
from gitd.stages.vae_encoding import preprocess
from gitd.stages.finetune import (FinetuneSettings, Trainer, apply_trained, build_edge_models,
                                  finetune, is_trainable, read_trained)
from gitd.stages.finetune.objective import (clip_pixels, draw_noise, image_features, pair_seed,
                                            sd_text_states, text_features)
from gitd.stages.finetune.losses import diversity_loss
from gitd.stages.finetune.train import make_accelerator


def settings(**kw):
    return FinetuneSettings.from_preset("tiny", device="cpu", **kw)


def models_for(s):
    return build_edge_models(s.diffusion_model, s.clip_model, device="cpu",
                             frozen_dtype=torch.float32, seed=s.seed)


def batch(ft_data, n=8, seed=0):
    ds = load_dataset(ft_data)
    recs = ds.records[:n]
    pixels = torch.stack([preprocess(open_rgb(r.image), 64) for r in recs])
    return pixels, [r.captions[0] for r in recs], [pair_seed(seed, 0, i) for i in range(n)]


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_only_bias_and_norm_parameters_change(ft_data, tmp_path):
    s = settings(epochs=1)
    models, fresh = models_for(s), models_for(s)
    run = finetune(ft_data, tmp_path / "run", s, models=models, accelerator=make_accelerator(s))
    before, after = dict(fresh.unet.named_parameters()), dict(models.unet.named_parameters())
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    trainable = {n for n in after if is_trainable(n)}
    assert changed and changed <= trainable
    assert len(changed) >= len(trainable) // 2
    # Buffers of the UNet and every tensor of the frozen models are bit-identical.
    for name in ("vae", "text_encoder"):
        a, b = getattr(models, name).state_dict(), getattr(fresh, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a, b = models.clip.model.state_dict(), fresh.clip.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The run holds only the trainable tensors; loaded onto a fresh base UNet they give the
    # trained UNet exactly.
    tensors, base = read_trained(run)
    assert set(tensors) == trainable
    assert base == {"model": "tiny-sd", "revision": None, "seed": 0}
    assert apply_trained(fresh.unet, tensors) == len(trainable)
    a, b = fresh.unet.state_dict(), models.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (run / "curves.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"loss", "contrastive", "diversity", "denoise", "pairs_per_s"} <= set(rows[0])


def test_apply_trained_refuses_another_base(ft_data):
    s = settings()
    models = models_for(s)
    name = next(n for n, _ in models.trainable())
    with pytest.raises(ConfigError, match="another base"):
        apply_trained(models.unet, {name: torch.zeros(3, 3, 3)})
    with pytest.raises(ConfigError, match="not parameters"):
        apply_trained(models.unet, {"no.such.bias": torch.zeros(1)})


class _Oracle(torch.nn.Module):
    """A UNet stand-in that predicts the true noise and records what it was given."""

    def __init__(self, eps):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.eps, self.seen = eps, None
        self.config = SimpleNamespace(in_channels=4)

    def forward(self, zt, t, encoder_hidden_states):
        self.seen = zt.detach().clone()
        return SimpleNamespace(sample=self.eps + 0 * self.w)


def test_unet_sees_the_noisy_latent_and_x0_is_consistent(ft_data):
    """The UNet is called on z_t = sqrt(a) z0 + sqrt(1-a) eps (not on z0), and x0 is formed
    from that same z_t: with a perfect noise prediction the decoded image is the decoded z0."""
    s = settings()
    m = models_for(s)
    pixels, caps, seeds = batch(ft_data, 4)
    noise = draw_noise(seeds, (4, 8, 8), 1000)
    m.unet = _Oracle(noise.noise)
    feats, mse = image_features(m, pixels, sd_text_states(m, caps), noise)
    scale = m.vae.config.scaling_factor
    with torch.no_grad():
        dist = m.vae.encode(pixels).latent_dist
        z0 = (dist.mean + dist.std * noise.posterior) * scale
        a = m.alphas_cumprod[noise.timesteps].view(-1, 1, 1, 1)
        assert torch.allclose(m.unet.seen, a.sqrt() * z0 + (1 - a).sqrt() * noise.noise,
                              atol=1e-5)
        ref = m.clip.model.get_image_features(pixel_values=clip_pixels(
            m.vae.decode(z0 / scale).sample, m.clip.image_processor))
        ref = getattr(ref, "pooler_output", ref)
    assert torch.allclose(feats, ref, atol=1e-3)
    assert float(mse.detach().abs().max()) == 0.0


def test_diversity_goes_down_when_optimised_alone(ft_data):
    # Random tiny models move slowly: a large step size shows the trend within a few steps.
    s = settings(contrastive_weight=0.0, diversity_weight=1.0, lr=5.0)
    m = models_for(s)
    trainer = Trainer(m, s, make_accelerator(s))
    pixels, caps, seeds = batch(ft_data, 8)
    noise = draw_noise(seeds, (4, 8, 8), 1000)
    text = text_features(m, caps)

    def diversity():
        with torch.no_grad():
            feats, _ = image_features(m, pixels, sd_text_states(m, caps), noise)
        return float(diversity_loss(feats, text))

    start = diversity()
    seen = [trainer.step([(pixels, caps, seeds)])["diversity"] for _ in range(6)]
    assert seen[0] == pytest.approx(start, abs=1e-5)
    assert all(b < a for a, b in zip(seen, seen[1:]))
    assert diversity() < start - 3e-3


def test_micro_batches_give_the_full_batch_gradient(ft_data):
    """Gradient caching: 4 micro-batches of 2 give the same update as one batch of 8 (the
    contrastive and diversity terms still see all 8 pairs)."""
    s1, s4 = settings(), settings(gradient_accumulation_steps=4)
    m1, m4 = models_for(s1), models_for(s4)
    t1, t4 = Trainer(m1, s1, make_accelerator(s1)), Trainer(m4, s4, make_accelerator(s4))
    pixels, caps, seeds = batch(ft_data, 8)
    for _ in range(2):
        r1 = t1.step([(pixels, caps, seeds)])
        r4 = t4.step([(pixels[i:i + 2], caps[i:i + 2], seeds[i:i + 2]) for i in range(0, 8, 2)])
        assert r1["loss"] == pytest.approx(r4["loss"], abs=1e-5)
    for (n, a), (_, b) in zip(m1.trainable(), m4.trainable()):
        assert torch.allclose(a, b, atol=1e-6), n


def test_finished_run_is_not_redone_and_other_settings_are_refused(ft_data, tmp_path):
    s = settings(epochs=1)
    run = finetune(ft_data, tmp_path / "run", s)
    stamp = (run / "trained.safetensors").stat().st_mtime_ns
    finetune(ft_data, run, s)
    assert (run / "trained.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="lr"):
        finetune(ft_data, run, settings(epochs=1, lr=0.5))
    # Settings that do not change the result may change on resume.
    finetune(ft_data, run, settings(epochs=1, checkpoint_every=5))


def test_run_folder_guards(ft_data, tmp_path):
    s = settings(epochs=1)
    # The one output-safety rule of gitd.outdir: never inside (or around) an input.
    with pytest.raises(GitdError, match="never writes over its inputs"):
        finetune(ft_data, ft_data.parent / "run", s)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a gitd finetune run"):
        finetune(ft_data, foreign, s)
    with pytest.raises(ConfigError, match="divisible"):
        finetune(ft_data, tmp_path / "r2", settings(gradient_accumulation_steps=3))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        finetune(ft_data, tmp_path / "r3", settings(batch_size=32))


def test_a_run_that_fails_before_its_first_step_leaves_nothing(ft_data, tmp_path):
    """Issue 20, item 11: RUN/images.json (and settings.json) stayed after such a failure."""
    with pytest.raises(ConfigError, match="fewer than one batch"):  # after the image check
        finetune(ft_data, tmp_path / "run", settings(batch_size=32))
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GitdError):  # after settings.json: the model cannot be loaded offline
        finetune(ft_data, empty, settings(diffusion_model=str(tmp_path / "no-such-model")))
    assert empty.is_dir() and not any(empty.iterdir())  # the user's folder stays, emptied
    # A run that trained a step keeps everything, so that it can resume.
    with pytest.raises(RuntimeError, match="stop"):
        finetune(ft_data, tmp_path / "kept", settings(epochs=1),
                 on_step=lambda step: (_ for _ in ()).throw(RuntimeError("stop")))
    assert {"images.json", "settings.json", "curves.jsonl"} <= {
        p.name for p in (tmp_path / "kept").iterdir()}
