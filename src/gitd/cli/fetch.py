"""`gitd fetch`: download exactly the model files a run reads, for runs without a network.

On a cluster whose compute nodes are offline: ``gitd fetch --method M --preset P`` on the
login node (online), then ``HF_HUB_OFFLINE=1 gitd distill ...`` on a compute node. The logic
is in ``gitd.models.fetch``; this module only turns flags into the list of repositories.
"""

from __future__ import annotations

import argparse

HELP = "download the model files a run reads (then run offline)"
MODEL_KINDS_EXTRA = ("text", "timm")


def add_parser(sub):
    from gitd.registry import get_method, list_methods
    from gitd.settings import add_arguments

    methods = list_methods("distill")
    p = sub.add_parser(
        "fetch", help=HELP,
        description="Download from the Hugging Face hub exactly the files the chosen runs load "
                    "(safetensors only, the folders the pipelines read, the fp16 variant where "
                    "a repository has one), and say what and how much. With no selection it "
                    "fetches what 'gitd distill' loads with the default method and preset. "
                    "Typical cluster use: 'gitd fetch --method pds --preset paper' on the "
                    "(online) login node, then 'HF_HUB_OFFLINE=1 gitd distill ...' on a compute "
                    "node. Setting flags (--captioner, --diffusion-model, ...) change the "
                    "models as they do for 'gitd distill'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS)
    p.add_argument("--method", action="append", metavar="{" + ",".join(methods) + "}",
                   help="a distillation method whose models to fetch (repeat for several; "
                        "default gitd)")
    p.add_argument("--preset", action="append", metavar="PRESET",
                   help="its preset (repeat for several; default each method's own)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON settings of the run, as for "
                                                    "'gitd distill --config'")
    p.add_argument("--finetune", nargs="?", const="paper", metavar="PRESET",
                   help="also the models of 'gitd finetune' with this preset (default paper)")
    p.add_argument("--caption", nargs="?", const="paper", metavar="PRESET",
                   help="also the vision-language model of 'gitd caption' (default paper)")
    p.add_argument("--evaluate", action="store_true",
                   help="also the papers' evaluation encoders (nfnet_l0, BERT base) that "
                        "'gitd evaluate' and 'gitd select' use for 'auto'")
    p.add_argument("--model", action="append", metavar="KIND=ID[@REV]",
                   help="also this model, KIND being vae, img2img, score, captioner, unclip, "
                        "text or timm (repeat for several)")
    p.add_argument("--dry-run", action="store_true",
                   help="list ids, revisions and file patterns, without any network")
    p.add_argument("--force", action="store_true",
                   help="download every file again (a damaged cache)")
    add_arguments(p, [(m, get_method(m).Settings) for m in methods])
    return p


_OWN = {"method", "preset", "config", "finetune", "caption", "evaluate", "model", "dry_run",
        "force", "command", "quiet", "verbose", "_run"}


def _model_spec(text: str):
    """``KIND=ID[@REV]`` -> the repository it reads."""
    import dataclasses

    from gitd.errors import ConfigError
    from gitd.models.files import TRANSFORMERS
    from gitd.models.hub import Need
    from gitd.models.registry import list_models, model_need

    kind, sep, rest = text.partition("=")
    name, _, rev = rest.partition("@")
    kinds = tuple(list_models()) + MODEL_KINDS_EXTRA
    if not sep or not name or kind not in kinds:
        raise ConfigError(f"--model {text!r}: give KIND=ID[@REV], KIND one of "
                          f"{', '.join(kinds)}")
    if kind in MODEL_KINDS_EXTRA:
        return Need(kind, name, rev or None, TRANSFORMERS, kind, uses=("--model",))
    need = model_need(kind, name, rev or None)
    if need is None:
        raise ConfigError(f"--model {text!r}: {name} is a registered model or a local folder; "
                          "there is nothing to fetch")
    return dataclasses.replace(need, uses=("--model",))


def _distill_needs(given: dict, overrides: dict) -> list:
    from gitd.config import DEFAULT_METHOD, make_config
    from gitd.errors import ConfigError
    from gitd.models.fetch import needs_of_roles
    from gitd.registry import get_method
    from gitd.settings import field_names

    needs = []
    methods = given.get("method") or [DEFAULT_METHOD]
    presets = given.get("preset") or [None]
    for name in methods:
        cls = get_method(name)
        own = {k: v for k, v in overrides.items() if k in set(field_names(cls.Settings))}
        if cls.kind != "distill":
            raise ConfigError(f"--method {name} is a selection; its models are the evaluation "
                              "encoders: use --evaluate")
        for preset in presets:
            if preset is not None and preset not in cls.presets:
                if len(presets) == 1:
                    raise ConfigError(f"unknown preset {preset!r} for method {name}; choose "
                                      f"one of: {', '.join(cls.presets)}")
                continue
            settings = make_config(preset=preset, config_file=given.get("config"),
                                   method=name, **own)
            needs += needs_of_roles(cls(settings).all_roles, settings,
                                    used=cls.roles_used(settings),
                                    label=f"{name} {settings.preset}: ")
    unknown = set(overrides) - {f for m in methods for f in field_names(get_method(m).Settings)}
    if unknown:
        raise ConfigError(f"{', '.join(sorted(unknown))}: not a setting of "
                          f"{', '.join(methods)}")
    return needs


def collect(given: dict) -> list:
    """The repositories the flags ask for, merged."""
    import dataclasses

    from gitd.models.fetch import merge
    from gitd.models.registry import model_need

    overrides = {k: v for k, v in given.items() if k not in _OWN}
    overrides.pop("dtype", None)
    extra = any(given.get(k) for k in ("finetune", "caption", "evaluate", "model"))
    distill = bool(given.get("method") or given.get("preset") or given.get("config")
                   or overrides or not extra)
    needs = _distill_needs(given, overrides) if distill else []
    if given.get("finetune"):
        from gitd.stages.finetune.settings import FinetuneSettings

        s = FinetuneSettings.from_preset(given["finetune"])
        label = f"finetune {given['finetune']}: "
        needs += [dataclasses.replace(n, uses=(label + use,)) for n, use in (
            (model_need("img2img", s.diffusion_model, s.diffusion_revision), "diffusion_model"),
            (model_need("score", s.clip_model, s.clip_revision), "clip_model")) if n]
    if given.get("caption"):
        from gitd.stages.caption_synthesis import command_settings

        s = command_settings(given["caption"])
        n = model_need("captioner", s.vlm, s.vlm_revision)
        if n:
            needs.append(dataclasses.replace(n, uses=(f"caption {given['caption']}: vlm",)))
    if given.get("evaluate"):
        from gitd.models.encoders import encoder_needs

        needs += encoder_needs()
    for spec in given.get("model") or []:
        needs.append(_model_spec(spec))
    return merge(needs)


def run(args) -> int:
    from gitd.models.fetch import dry_run, fetch

    given = vars(args)
    needs = collect(given)
    # What a CUDA run loads (dtype auto there is float16); --dtype float32 fetches full
    # precision.
    fp16 = given.get("dtype", "auto") in ("auto", "float16", "bfloat16")
    if not needs:
        print("nothing to fetch: the chosen models are registered (tiny, random) or local "
              "folders")
        return 0
    if given.get("dry_run"):
        for line in dry_run(needs, fp16=fp16):
            print(line)
        return 0
    fetch(needs, fp16=fp16, force=bool(given.get("force")))
    return 0
