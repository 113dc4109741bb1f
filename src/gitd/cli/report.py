"""`gitd report` (not implemented yet)."""

from gitd.errors import GitdError


def add_parser(sub):
    return sub.add_parser("report", help="(not implemented yet)")


def run(args) -> int:
    raise GitdError("'gitd report' is not implemented yet")
