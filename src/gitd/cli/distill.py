"""`gitd distill DATA --pairs K --out OUT`: distil a dataset into K synthetic pairs.

Every setting flag is generated from the registered methods' declared settings
(``gitd.settings.add_arguments``); a flag only some methods have says which in its help.
"""

from __future__ import annotations

import argparse

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "distil a dataset into a few synthetic image-caption pairs"


def add_parser(sub):
    from gitd.config import DEFAULT_METHOD
    from gitd.methods.base import DistillSettings
    from gitd.presets import add_preset_argument
    from gitd.registry import get_method, list_methods
    from gitd.settings import add_argument_for, add_arguments

    methods = list_methods("distill")
    listing = "; ".join(f"{m}: {get_method(m).summary().rstrip('.')}" for m in methods)
    p = sub.add_parser(
        "distill", help=HELP,
        description="Distil DATA into K image-caption pairs written to OUT (images/, "
                    "annotations.json, metadata.jsonl, manifest.json). Every stage is cached in "
                    "the work folder: re-running the same command finishes only what is "
                    f"missing. Methods: {listing}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS)
    p.add_argument("data", help="annotation file or folder (BLIP JSON, Karpathy, COCO captions, "
                                "imagefolder metadata)")
    add_argument_for(p, DistillSettings, "pairs", required=True)
    p.add_argument("--out", "-o", required=True, help="output folder")
    # Not argparse choices: an unknown method is the registry's one-line error (exit 2).
    p.add_argument("--method", metavar="{" + ",".join(methods) + "}",
                   help=f"distillation method (default {DEFAULT_METHOD})")
    add_preset_argument(p, [get_method(m).preset_table() for m in methods],
                        "model and setting preset (tiny runs offline; not every method has "
                        "every preset: 'gitd methods' lists them)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON settings (a method, a preset "
                   "and any field); flags given here override it")
    p.add_argument("--images", metavar="ROOT", help="image root for relative paths (default: "
                   "the annotation file's folder)")
    p.add_argument("--split", help="split of a Karpathy file (default train, which includes "
                                   "restval) or sub-folder of a Hugging Face split layout "
                                   "(DATA/train/metadata.jsonl)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input row "
                   "instead of skipping it")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="follow image paths that resolve outside the image root")
    add_arguments(p, [(m, get_method(m).Settings) for m in methods],
                  defaults={m: get_method(m).configure() for m in methods})
    # Declared with cli=False because its value is optional: bare --ray means $RAY_ADDRESS.
    add_argument_for(p, get_method("gitd").Settings, "ray", nargs="?", const="")
    return p


_LOADING = {"data", "out", "config", "images", "split", "strict", "allow_outside_root",
            "command", "quiet", "verbose", "_run"}


def run(args) -> int:
    from gitd.config import make_config
    from gitd.methods import distill

    given = vars(args)
    overrides = {k: v for k, v in given.items() if k not in _LOADING and k != "preset"}
    settings = make_config(preset=given.get("preset"), config_file=given.get("config"),
                           **overrides)
    out = distill(args.data, args.out, settings, images=given.get("images"),
                  split=given.get("split", "train"), strict=given.get("strict", False),
                  allow_outside_root=given.get("allow_outside_root", False),
                  config_file=given.get("config"))
    print(out)
    return 0
