"""`gitd export OUT --to lors|mtt-vl|blip|edge DEST`: the file layout the field's scripts open."""

from __future__ import annotations

from gitd.cli._splits import add_split_options

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "write a set in the file layout of LoRS, MTT-VL, BLIP or EDGE"


def add_parser(sub):
    from gitd.data.export import NAMES, TARGETS

    p = sub.add_parser(
        "export", help=HELP,
        description="Copy the pairs of OUT (a gitd output folder, or any set gitd reads) to DEST "
                    "under the file names the target's training script opens: for lors, mtt-vl "
                    "and blip DEST/flickr30k_train.json (coco: coco_karpathy_train.json) with "
                    "DEST as both image root and annotation root; for edge "
                    "DEST/flickr30k_train.json (coco: coco_train.json) with rows relative to "
                    "DEST/images, its evaluation's image root. DEST may hold other files, but "
                    "gitd never overwrites one it did not write, and DEST may not overlap OUT.")
    p.add_argument("out", metavar="OUT", help="gitd output folder (or any annotation file/folder)")
    p.add_argument("--to", required=True, choices=TARGETS, help="whose layout to write")
    p.add_argument("dest", metavar="DEST", help="folder to write (created if missing)")
    p.add_argument("--name", choices=NAMES, default="flickr30k",
                   help="which dataset's file names to use (default: flickr30k)")
    p.add_argument("--test", metavar="S", help="also write this test set as the script's test "
                   "file (lors, mtt-vl, blip; absolute image paths)")
    p.add_argument("--test-images", metavar="ROOT", help="image root of --test")
    p.add_argument("--val", metavar="V", help="also write this set as the script's val file")
    p.add_argument("--val-images", metavar="ROOT", help="image root of --val")
    add_split_options(p, ("test", "val"))
    return p


def run(args) -> int:
    from gitd.data.export import export

    result = export(args.out, args.to, args.dest, name=args.name, test=args.test, val=args.val,
                    test_split=args.test_split, val_split=args.val_split,
                    test_images=args.test_images, val_images=args.val_images)
    print(result.usage)
    return 0
