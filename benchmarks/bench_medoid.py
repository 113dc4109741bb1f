"""Seconds per medoid at the real model sizes (random weights), against the FLOP floor.

Builds a preset's models with random weights at their real sizes (``random-fast`` or
``random-paper``: SD 1.5 img2img, CLIP ViT-B/32, BLIP base; ``gitd.models.fullsize``) and times
gitd's own stage functions on one medoid: VAE encode of one training image, img2img of the
preset's candidates (``gitd.stages.img2img.generate_candidates``), CLIP selection, and the
captioner's sampled captions with CLIP selection (``gitd.stages.caption.caption_images``).
Random weights cost the same FLOPs as trained ones; the captioner runs to ``max_new_tokens``
(random weights rarely sample end-of-sequence), an upper bound for real captions.

It also measures the device's dense matrix-product rate (square matmuls in the run's dtype) and
counts the FLOPs of each step with ``torch.utils.flop_counter``, so the table shows how far each
step is from its floor (FLOPs / measured matmul rate).

    python benchmarks/bench_medoid.py --preset random-fast --device cpu --threads 2
    python benchmarks/bench_medoid.py --preset random-paper --device cuda --dtype float16 \\
        --batch 1 4 --repeat 3          # on a GPU: batched against unbatched, fp16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

from gitd.config import make_config  # noqa: E402
from gitd.log import setup_logging  # noqa: E402
from gitd.models import build_captioner, build_img2img, build_score_model, build_vae  # noqa: E402
from gitd.stages.caption import caption_images  # noqa: E402
from gitd.stages.img2img import generate_candidates, select_best  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def matmul_rate(device, dtype, n: int, seconds: float = 3.0) -> float:
    """Dense matmul FLOP/s: n x n by n x n, repeated for about ``seconds``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
        if device.type == "cuda" and done % 20:
            continue
        sync(device)
    sync(device)
    return 2 * n ** 3 * done / (time.perf_counter() - t0)


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="random-fast", choices=["random-fast", "random-paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--batch", type=int, nargs="+", default=[1],
                    help="medoids per img2img call and images per captioner call; each value "
                         "is a row (1 = unbatched); times are per medoid")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None,
                    help="override the preset's num_inference_steps (quick checks)")
    ap.add_argument("--matmul-n", type=int, default=None,
                    help="matmul size for the rate (default 4096 on GPU, 2048 on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    setup_logging(quiet=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    overrides = {"num_inference_steps": args.steps} if args.steps else {}
    cfg = make_config(args.preset, **overrides)
    res = cfg.resolution

    t0 = time.perf_counter()
    vae = build_vae(cfg.diffusion_model, device=device, dtype=dtype, seed=args.seed)
    pipe = build_img2img(cfg.diffusion_model, device=device, dtype=dtype, seed=args.seed, vae=vae)
    score = build_score_model(cfg.score_model, device=device, dtype=dtype, seed=args.seed)
    captioner = build_captioner(cfg.captioner, device=device, dtype=dtype, seed=args.seed)
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    image = torch.from_numpy(rng.uniform(-1, 1, (1, 3, res, res)).astype(np.float32))
    image = image.to(device, dtype)
    prompt = ("a small red circle above a large blue square and a green triangle on the left, "
              "on a grey background")
    eff_steps = int(cfg.num_inference_steps * cfg.strength)

    with torch.no_grad():
        encode_s, latent = timed(lambda: vae.encode(image).latent_dist.mean, device, args.repeat)
        latent = latent * vae.config.scaling_factor
        encode_flops = count_flops(lambda: vae.encode(image).latent_dist.mean)

    rate = matmul_rate(device, dtype, args.matmul_n or (4096 if device.type == "cuda" else 2048))

    rows = []
    for b in args.batch:
        latents = latent.repeat(b, 1, 1, 1)
        prompts = [prompt] * b

        def generate():
            return generate_candidates(
                pipe, latents, prompts, negative_prompt=cfg.negative_prompt,
                strength=cfg.strength, guidance_scale=cfg.guidance_scale,
                num_inference_steps=cfg.num_inference_steps,
                num_candidates=cfg.num_candidates, seeds=list(range(b)))

        gen_s, cands = timed(generate, device, args.repeat)
        best = [c[select_best(score, c, prompt)[0]] for c in cands]
        score_s, _ = timed(lambda: [select_best(score, c, prompt) for c in cands], device,
                           args.repeat)

        def caption():
            return caption_images(captioner, score, best, num_captions=cfg.num_captions,
                                  temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_new_tokens=cfg.max_new_tokens, seeds=list(range(b)))

        cap_s, caps = timed(caption, device, args.repeat)
        # Generated length, re-tokenized from the decoded text (word pieces of random tokens
        # may re-tokenize a little differently); special tokens not counted.
        n_tokens = statistics.median(
            len(captioner.processor.tokenizer(c, add_special_tokens=False).input_ids)
            for r in caps for c in r.candidates)
        rows.append((b, gen_s / b, score_s / b, cap_s / b, n_tokens))

    # FLOPs per medoid, counted once at batch 1 (the same per medoid at any batch).
    n = cfg.num_candidates
    with torch.no_grad():
        text = pipe.encode_prompt(prompt, device, n, True, cfg.negative_prompt)
        cond = torch.cat([text[1], text[0]])
        x = torch.randn(2 * n, 4, res // 8, res // 8, device=device, dtype=dtype)
        t = torch.tensor(500, device=device)
        unet_flops = count_flops(lambda: pipe.unet(x, t, encoder_hidden_states=cond))
        decode_flops = count_flops(lambda: vae.decode(x[:n] / vae.config.scaling_factor))
    gen_flops = eff_steps * unet_flops + decode_flops
    cap_flops = count_flops(lambda: caption_images(
        captioner, score, best[:1], num_captions=cfg.num_captions, temperature=cfg.temperature,
        top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seeds=[0]))

    print(f"machine: {machine()}; device {device}, {args.dtype}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"preset {args.preset}: {res} px, {cfg.num_inference_steps} steps x strength "
          f"{cfg.strength} = {eff_steps} denoising steps, {n} candidates (CFG doubles the UNet "
          f"batch to {2 * n}), {cfg.num_captions} captions of up to {cfg.max_new_tokens} tokens; "
          f"models built in {build_s:.1f} s")
    print(f"measured matmul rate: {rate / 1e12:.3f} TFLOP/s ({args.dtype})")
    print(f"FLOPs: VAE encode {encode_flops / 1e9:.1f} G per image; UNet {unet_flops / 1e9:.1f} G"
          f" per step (batch {2 * n}); generate {gen_flops / 1e12:.2f} T per medoid; caption "
          f"{cap_flops / 1e9:.1f} G per image")
    print()
    head = ["medoids per call", "encode s/img", "generate s/medoid", "floor s",
            "x floor", "select s", "caption s/medoid", "caption floor s", "tokens per caption",
            "total s/medoid"]
    body = []
    for b, g, s, c, tok in rows:
        body.append([b, f"{encode_s:.2f}", f"{g:.1f}", f"{gen_flops / rate:.1f}",
                     f"{g / (gen_flops / rate):.1f}", f"{s:.2f}", f"{c:.1f}",
                     f"{cap_flops / rate:.2f}", f"{tok:.0f}", f"{g + s + c:.1f}"])
    print(table(head, body))
    print()
    print("reproduce: python benchmarks/bench_medoid.py " + " ".join(
        sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
