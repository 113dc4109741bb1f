"""`gitd shapes` (not implemented yet)."""

from gitd.errors import GitdError


def add_parser(sub):
    return sub.add_parser("shapes", help="(not implemented yet)")


def run(args) -> int:
    raise GitdError("'gitd shapes' is not implemented yet")
