"""`gitd select` (not implemented yet)."""

from gitd.errors import GitdError


def add_parser(sub):
    return sub.add_parser("select", help="(not implemented yet)")


def run(args) -> int:
    raise GitdError("'gitd select' is not implemented yet")
