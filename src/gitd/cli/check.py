"""`gitd check` (not implemented yet)."""

from gitd.errors import GitdError


def add_parser(sub):
    return sub.add_parser("check", help="(not implemented yet)")


def run(args) -> int:
    raise GitdError("'gitd check' is not implemented yet")
