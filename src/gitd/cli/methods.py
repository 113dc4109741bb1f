"""`gitd methods [NAME]`: every registered method, its presets, models and settings."""

from __future__ import annotations

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "list the distillation and selection methods and every setting they take"


def add_parser(sub):
    p = sub.add_parser("methods", help=HELP,
                       description="Print each registered method (gitd distill --method, gitd "
                                   "select --method): presets, model roles, and every setting "
                                   "with its flag, rule, default and help.")
    p.add_argument("name", nargs="?", help="only this method")
    p.add_argument("--kind", choices=("distill", "select"), help="only this kind")
    return p


def run(args) -> int:
    from gitd.registry import describe

    print(describe(args.kind, args.name), end="")
    return 0
