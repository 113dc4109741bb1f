"""`gitd report`: one self-contained HTML page about an output folder."""

from __future__ import annotations

from gitd.cli.options import add_int

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "write a self-contained HTML report of a distilled or selected set"


def add_parser(sub):
    p = sub.add_parser(
        "report", help=HELP,
        description="Write OUT/report.html: the distilled pairs beside their medoids' source "
                    "images and captions, scores, cluster sizes, stage timings, skipped rows, "
                    "the full config and, when evaluation results exist (OUT/results.json, "
                    "OUT/results/*.json or --results), the retrieval table and a plot of recall "
                    "against the number of pairs. One file, images embedded, no network.")
    p.add_argument("out", metavar="OUT", help="output folder of gitd distill or gitd select")
    p.add_argument("--results", metavar="PATH", action="extend", nargs="+", default=[],
                   help="results files from 'gitd evaluate --out', or folders of them (a folder "
                        "of run folders, each with a results.json, works too) to include in the "
                        "table and plot; several paths or a shell glob, or repeat the flag")
    p.add_argument("--out", dest="dest", metavar="FILE", default=None,
                   help="where to write the report (default: OUT/report.html)")
    add_int(p, "--thumb-size", range=(16, 4096), default=224, metavar="PX",
            help="longest side of the embedded thumbnails in pixels (default: 224)")
    return p


def run(args) -> int:
    from gitd.report import write_report

    dest = write_report(args.out, results=args.results, dest=args.dest,
                        thumb_size=args.thumb_size)
    print(dest)
    return 0
