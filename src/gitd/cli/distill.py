"""`gitd distill` (not implemented yet)."""

from gitd.errors import GitdError


def add_parser(sub):
    return sub.add_parser("distill", help="(not implemented yet)")


def run(args) -> int:
    raise GitdError("'gitd distill' is not implemented yet")
