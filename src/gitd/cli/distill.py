"""`gitd distill DATA --pairs K --out OUT`: distil a dataset into K synthetic pairs."""

from __future__ import annotations

import argparse
import dataclasses

from gitd.config import METHODS, PRESETS, DistillConfig, make_config

# Settings whose flag is not the plain --field-name form, or that the parser treats specially.
_SPECIAL = {"method", "preset", "pairs", "work", "cluster", "diffusion", "captioner_on", "score",
            "sample_latents", "recaption"}
_ABLATIONS = {  # flag -> (field, help)
    "--no-cluster": ("cluster", "random medoids instead of CLARA (the paper's /C ablation)"),
    "--no-diffusion": ("diffusion", "the medoid's original image instead of img2img (/D)"),
    "--no-captioner": ("captioner_on", "the medoid's original caption instead of the captioner "
                                       "(/T)"),
    "--no-score": ("score", "the first candidate instead of the score model's pick (/S)"),
}
_HELP = {
    "seed": "seed of the whole run (default 0); same seed, machine and device: same output",
    "device": "auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N or mps",
    "dtype": "auto (float16 on CUDA, float32 elsewhere), float32, float16 or bfloat16",
    "resolution": "image side in pixels for encoding and generation (a multiple of 8)",
    "diffusion_model": "Stable Diffusion id or folder (VAE + UNet + text encoder), or tiny-sd",
    "score_model": "CLIP id or folder used to pick candidates and captions, or tiny-clip",
    "captioner": "image-to-text model id or folder (BLIP, BLIP-2, ...), or tiny-blip",
    "strength": "img2img strength: fraction of the schedule run from the medoid's latent",
    "guidance_scale": "classifier-free guidance scale",
    "num_inference_steps": "scheduler steps (about strength x steps are run)",
    "num_candidates": "images generated per medoid; the score model keeps one",
    "negative_prompt": "negative prompt for generation",
    "prompt": "which of the medoid's captions prompts the generator: longest or first",
    "num_captions": "captions sampled per synthetic image; the score model keeps one",
    "temperature": "captioner sampling temperature",
    "top_p": "captioner nucleus sampling top_p",
    "max_new_tokens": "longest caption, in tokens",
    "encode_batch_size": "images per VAE batch",
    "encode_workers": "DataLoader worker processes that decode images for encoding",
    "vae": "VAE for img2img's latents and decoding: SD VAE or TAESD id or folder (e.g. "
           "madebyollin/taesd); default the diffusion model's own",
    "cluster_vae": "VAE whose latents are clustered (e.g. a TAESD folder); only the medoids are "
                   "then encoded with --vae; default the same as --vae",
    "cluster_space": "what CLARA clusters: latents (default, the paper) or features (the "
                     "evaluation encoders' image + caption embeddings, as herding/k-center)",
    "feature_image_size": "image side for --cluster-space features",
    "clara_samples": "CLARA: number of random samples (default 5)",
    "clara_sample_size": "CLARA: rows per sample (default max(80 + 4k, 1000))",
    "generate_batch_size": "medoids per img2img call",
    "caption_batch_size": "images per captioner call",
    "unclip_model": "pds: Stable unCLIP id or folder, or tiny-unclip",
    "noise_level": "pds: unCLIP noise level added to the image embedding",
    "filter_fraction": "pds: fraction of pairs with the lowest image-text cosine dropped",
}


def _type_of(field: dataclasses.Field):
    default = field.default
    if isinstance(default, bool):
        return None
    if isinstance(default, float):
        return float
    if isinstance(default, int) or field.name.startswith("clara_"):
        return int
    return str


def add_parser(sub):
    p = sub.add_parser(
        "distill", help="distil a dataset into a few synthetic image-caption pairs",
        description="Distil DATA into K image-caption pairs written to OUT (images/, "
                    "annotations.json, metadata.jsonl, manifest.json). Every stage is cached in "
                    "the work folder: re-running the same command finishes only what is missing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS)
    p.add_argument("data", help="annotation file or folder (BLIP JSON, Karpathy, COCO captions, "
                                "imagefolder metadata)")
    p.add_argument("--pairs", "-k", type=int, required=True, help="number of pairs to produce")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--method", choices=METHODS, help="distillation method: gitd (default) or "
                   "pds (prototype-guided unCLIP synthesis)")
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="model and setting preset (default paper; tiny runs offline)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON settings (a preset plus any "
                   "field); flags given here override it")
    p.add_argument("--work", help="work folder of cached stages (default OUT/work)")
    p.add_argument("--images", metavar="ROOT", help="image root for relative paths (default: "
                   "the annotation file's folder)")
    p.add_argument("--split", help="split of a Karpathy file (default train, which includes "
                                   "restval)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input row "
                   "instead of skipping it")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="follow image paths that resolve outside the image root")
    p.add_argument("--sample-latents", action="store_true", dest="sample_latents",
                   help="sample VAE latents instead of taking their mean")
    p.add_argument("--recaption", action="store_true", dest="recaption",
                   help="pds: re-caption each synthetic image with the captioner, the score "
                        "model keeping the best (as GITD does)")
    for flag, (field, help_) in _ABLATIONS.items():
        p.add_argument(flag, dest=field, action="store_false", help=help_)
    for field in dataclasses.fields(DistillConfig):
        if field.name in _SPECIAL:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.name.endswith("_revision"):
            p.add_argument(flag, dest=field.name, metavar="REV",
                           help=f"revision (commit/tag) of {field.name[:-9].replace('_', ' ')}")
            continue
        p.add_argument(flag, dest=field.name, type=_type_of(field),
                       help=_HELP.get(field.name, field.name.replace("_", " ")))
    return p


_LOADING = {"data", "out", "config", "images", "split", "strict", "allow_outside_root",
            "command", "quiet", "verbose", "_run"}


def run(args) -> int:
    from gitd.methods import distill

    given = vars(args)
    overrides = {k: v for k, v in given.items() if k not in _LOADING and k != "preset"}
    config = make_config(preset=given.get("preset"), config_file=given.get("config"),
                         **overrides)
    out = distill(args.data, args.out, config, images=given.get("images"),
                  split=given.get("split", "train"), strict=given.get("strict", False),
                  allow_outside_root=given.get("allow_outside_root", False),
                  work=config.work)
    print(out)
    return 0
