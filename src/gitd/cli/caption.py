"""`gitd caption OUT --extra N`: add N synthesised captions to every image of a gitd output."""

from __future__ import annotations

import argparse

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = ("add captions from a vision-language model to a gitd output (EDGE's caption "
        "synthesis)")


def add_parser(sub):
    from gitd.presets import add_preset_argument
    from gitd.settings import add_arguments
    from gitd.stages.caption_synthesis import (PRESETS, CaptionCommandSettings,
                                               command_settings)

    p = sub.add_parser(
        "caption", help=HELP,
        description="Add N captions per image to the gitd output OUT from an image-text-to-text "
                    "model (LLaVA-1.5-7B in the paper preset, prompted 'Describe the image in "
                    "one sentence.'). Each image keeps its original caption(s) first; "
                    "annotations.json gets one row per caption with the image's image_id. "
                    "Replaces OUT as a whole (or writes --out DEST), as every gitd writer "
                    "does: an evaluation or report of the captions before goes with them. "
                    "Finished images are kept in OUT/work, so a killed run resumes where it "
                    "stopped. 'gitd distill --extra-captions N' does the same as part of a "
                    "distillation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS)
    p.add_argument("output", metavar="OUT", help="a gitd output folder (or its annotations.json)")
    p.add_argument("--out", "-o", metavar="DEST", help="write the result here instead of "
                                                       "rewriting OUT")
    add_preset_argument(p, [PRESETS], "model preset")
    add_arguments(p, [("caption", CaptionCommandSettings)],
                  defaults={"caption": command_settings()})
    return p


_LOADING = {"output", "out", "preset", "command", "quiet", "verbose", "_run"}


def run(args) -> int:
    from gitd.stages.caption_synthesis import caption_output, command_settings

    given = vars(args)
    values = {k: v for k, v in given.items() if k not in _LOADING}
    settings = command_settings(given.get("preset"), **values)
    from gitd.models.fetch import check_named
    from gitd.stages.caption_synthesis import PRESETS

    name = PRESETS.chosen(given.get("preset"))
    preset = command_settings(name)
    check_named([("captioner", settings.vlm, settings.vlm_revision)],
                base=f"gitd fetch --caption {name}",
                preset=[("captioner", preset.vlm, preset.vlm_revision)])
    print(caption_output(args.output, settings, dest=given.get("out")))
    return 0
