"""`gitd finetune DATA --out RUN`: EDGE's fine-tuning of SD's UNet (bias and norm parameters)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from gitd.settings import Interval, setting

# Environment variables any torch/accelerate launcher sets in the processes it starts.
_LAUNCHED = ("WORLD_SIZE", "LOCAL_RANK")

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "fine-tune Stable Diffusion for image-text alignment and diversity (EDGE)"


@dataclass(frozen=True)
class LaunchSettings:
    """How ``gitd finetune`` runs (not what it trains: no trained weight depends on it)."""

    num_processes: int | None = setting(
        None, Interval(int, 1, 1024), "data-parallel processes (default: one per visible GPU, "
        "else 1); with --device cpu, N > 1 runs N CPU processes (for testing)", optional=True,
        affects_results=False, metavar="N")


def add_parser(sub):
    # Imported here: gitd.stages.finetune imports torch, which `gitd --help` does not need.
    from gitd.presets import add_preset_argument, presets_of
    from gitd.settings import add_arguments
    from gitd.stages.finetune.settings import FinetuneSettings

    p = sub.add_parser(
        "finetune", help=HELP,
        description="Fine-tune the bias and normalisation parameters of Stable Diffusion's "
                    "UNet on DATA with EDGE's objective (contrastive + diversity on CLIP "
                    "features of the decoded x0 prediction). RUN gets trained.safetensors "
                    "(only the trained parameters), settings.json, curves.jsonl (loss terms per "
                    "step, written as they go) and checkpoint.safetensors; re-running the same "
                    "command resumes from the last checkpoint. Uses every visible GPU (one "
                    "process each, launched through Hugging Face accelerate); 'accelerate "
                    "launch -m gitd finetune ...' works too.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS)
    p.add_argument("data", help="annotation file or folder (any format gitd reads)")
    p.add_argument("--out", "-o", required=True, metavar="RUN", help="run folder")
    add_preset_argument(p, [presets_of("finetune")], "settings preset")
    p.add_argument("--images", metavar="ROOT", help="image root (default: the annotation "
                                                    "file's folder)")
    p.add_argument("--split", help="split of a Karpathy file (default train)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input row")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="follow image paths that resolve outside the image root")
    add_arguments(p, [("finetune", FinetuneSettings), ("finetune", LaunchSettings)],
                  defaults={"finetune": presets_of("finetune").make()})
    return p


_LOADING = {"data", "out", "images", "split", "strict", "allow_outside_root", "num_processes",
            "command", "quiet", "verbose", "_run", "preset"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes(given: dict, device: str) -> int:
    n = given.get("num_processes")
    if n is not None:  # the parser has checked its range
        return n
    if device == "cpu":
        return 1
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def command_line(given: dict) -> list[str]:
    """``gitd finetune`` arguments that give ``given`` (the parsed flags, defaults unset)."""
    from gitd.settings import Boolean, declared, flags_of
    from gitd.stages.finetune.settings import FinetuneSettings

    switches = {f.name: flags_of(f.name, d) for f, d in declared(FinetuneSettings)
                if isinstance(d.constraint, Boolean)}
    argv = ["finetune", str(given["data"])]
    for key, value in given.items():
        if key in ("data", "command", "_run"):
            continue
        if key in switches:
            argv.append(switches[key][0] if value else switches[key][-1])
        elif value is True:
            argv.append("--" + key.replace("_", "-"))
        elif value is not False:
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def relaunch(argv: list[str], processes: int) -> int:
    """Run this same command in ``processes`` processes through ``accelerate launch``."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "gitd", *argv]
    return subprocess.call(cmd)


def run(args) -> int:
    from gitd.stages.finetune import finetune
    from gitd.stages.finetune.settings import FinetuneSettings

    given = vars(args)
    overrides = {k: v for k, v in given.items() if k not in _LOADING}
    settings = FinetuneSettings.from_preset(given.get("preset"), **overrides)
    settings.validate()
    from gitd.models.fetch import check_named

    # Every missing model in one message, before any work.
    def models(s):
        return [("img2img", s.diffusion_model, s.diffusion_revision),
                ("score", s.clip_model, s.clip_revision)]

    preset = given.get("preset") or "paper"
    check_named(models(settings), base=f"gitd fetch --finetune {preset}",
                preset=models(FinetuneSettings.from_preset(preset)))
    launched = any(v in os.environ for v in _LAUNCHED)
    n = _processes(given, settings.device)
    if n > 1 and not launched:
        # accelerate decides mixed precision per Accelerator; gitd passes its own, so the
        # launcher's is only a default that gitd overrides.
        return relaunch(command_line(given), n)
    out = finetune(args.data, args.out, settings, images=given.get("images"),
                   split=given.get("split", "train"), strict=given.get("strict", False),
                   allow_outside_root=given.get("allow_outside_root", False))
    if int(os.environ.get("RANK", "0")) == 0:
        print(out)
    return 0
