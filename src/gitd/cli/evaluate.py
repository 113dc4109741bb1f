"""`gitd evaluate` (not implemented yet)."""

from gitd.errors import GitdError


def add_parser(sub):
    return sub.add_parser("evaluate", help="(not implemented yet)")


def run(args) -> int:
    raise GitdError("'gitd evaluate' is not implemented yet")
