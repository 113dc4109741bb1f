"""Command line: argument parsing only. Each subcommand lives in its own module under
``gitd.cli`` with ``HELP`` (its line in ``gitd --help``), ``add_parser(subparsers)`` and
``run(args) -> int``, and calls one public library function; no pipeline logic lives here.

Start-up is kept short by importing what a command needs when it needs it: ``main`` builds the
full parser of the one command it runs (a distill parser imports every method to list their
settings, which imports torch), and lists the others by their ``HELP`` alone. Importing this
package imports neither torch nor numpy (tests/cli/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from gitd import __version__
from gitd.cli.options import Parser, add_threads
from gitd.errors import GitdError, environment_error
from gitd.log import close_bars, setup_logging

# Module names under gitd.cli, in the order `gitd --help` lists them.
COMMANDS = ("shapes", "check", "distill", "select", "evaluate", "benchmark", "report", "export",
            "methods", "finetune", "caption", "fetch")
# Commands that run models, and so take --threads.
MODEL_COMMANDS = ("distill", "select", "evaluate", "benchmark", "finetune", "caption")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (the top-level parser has no option taking a value, so it
    is the first word that is not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command (``argv`` None), or of the one command ``argv`` names with
    the others listed by name and help only (what ``main`` uses: the cheap way)."""
    parser = Parser(
        prog="gitd",
        description="Distil an image-caption dataset into a few synthetic pairs that still train "
                    "a retrieval model, and evaluate the result honestly.",
        epilog="Run 'gitd COMMAND --help' for a command's options. Typical flow: gitd shapes data/ "
               "&& gitd check data/train.json && gitd distill data/train.json --pairs 8 --preset "
               "tiny --out out/ && gitd evaluate --train out/annotations.json --test data/test.json",
    )
    parser.add_argument("--version", action="version", version=f"gitd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else _command_in(argv)
    for name in COMMANDS:
        module = importlib.import_module(f"gitd.cli.{name}")
        if argv is not None and name != chosen:
            sub.add_parser(name, help=module.HELP, add_help=False)
            continue
        p = module.add_parser(sub)
        if name in MODEL_COMMANDS:
            add_threads(p)
        p.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or info logs (warnings and errors still go to stderr)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logs")
        p.set_defaults(_run=module.run)
    return parser


def _interrupt_once(signum, frame):
    """The program's Ctrl-C: the first press stops the command; later ones are ignored, so the
    clean-up it triggers (finished units kept, workers stopped) and its one line complete."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status. Every way out is one line at most: a
    ``GitdError`` (its exit code), an operating-system failure or running out of memory
    (2), Ctrl-C (130). Called as the program (``argv`` None), a Ctrl-C after the command
    has ended, while worker processes are being shut down, is ignored rather than turning
    the exit into a bare SIGINT with no message."""
    program = argv is None
    name = "gitd"
    if program:
        signal.signal(signal.SIGINT, _interrupt_once)
    try:
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):  # a lone surrogate from a dataset must print
                stream.reconfigure(errors="backslashreplace")
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a usage error already printed
            return exc.code if isinstance(exc.code, int) else 2
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        name = f"gitd {args.command}"
        setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
        # Not a setting of any method: taken off here, before the command sees its flags.
        threads = vars(args).pop("threads", None)
        if threads is not None:
            from gitd.threads import request_threads

            request_threads(threads)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if program:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        close_bars()
        print(f"{name}: interrupted; finished work is kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except GitdError as exc:
        close_bars()
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the environment (disk full, read-only, ...), never our bug's text
        print(f"{name}: error: {environment_error(exc.filename or '?', exc, action='access')}",
              file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{name}: error: out of memory; use smaller batches or a smaller --resolution "
              "/ --image-size; finished work is kept", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        from gitd.cli.oom import is_out_of_memory, out_of_memory_line

        if not is_out_of_memory(exc):
            raise
        close_bars()
        print(f"{name}: error: {out_of_memory_line(name.removeprefix('gitd ').strip())}",
              file=sys.stderr)
        return 2
    finally:
        if program:
            # Interpreter shutdown joins DataLoader and pool workers: an impatient second
            # Ctrl-C there must not replace the exit status and message above.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
