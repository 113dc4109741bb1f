"""`gitd evaluate`: train a retrieval model on a training set and score it on a test set."""

from __future__ import annotations

import argparse

from gitd.cli.options import IMAGE_SIZE_RANGE, add_int

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "train a retrieval model on a (distilled) set and score it on a test set"


def add_parser(sub):
    from gitd.cli._splits import add_split_options
    from gitd.retrieval.protocols import DEFAULT_PROTOCOL, PROTOCOLS
    p = sub.add_parser(
        "evaluate", help=HELP,
        description="Train the shared protocol's retrieval model (trainable image encoder, frozen "
                    "text encoder + projection head, InfoNCE) on --train and report image-text "
                    "retrieval on --test: TR@1/5/10, IR@1/5/10 and r_mean, mean ± sample std over "
                    "seeds, from the LAST epoch (or the epoch chosen on --val). Results table on "
                    "stdout, logs on stderr.",
        epilog="CPU: use --image-size 128 and few epochs, e.g. gitd evaluate --train "
               "out/annotations.json --test data/test.json --epochs 20 --image-size 128. "
               "See docs/evaluation.md.")
    p.add_argument("--train", required=True, metavar="T",
                   help="training set: annotation file or folder (e.g. gitd's OUT/annotations.json)")
    p.add_argument("--test", required=True, metavar="S", help="test set annotation file or folder")
    p.add_argument("--val", metavar="V", help="validation set: picks the reported epoch")
    add_split_options(p, ("train", "test", "val"))
    p.add_argument("--allow-test-overlap", action="store_true",
                   help="evaluate even when the test set shares images with the training pairs' "
                        "source split or with --val (refused otherwise); the results say so")
    p.add_argument("--images", metavar="ROOT", help="image root of --train (default: its folder)")
    p.add_argument("--test-images", metavar="ROOT", help="image root of --test")
    p.add_argument("--val-images", metavar="ROOT", help="image root of --val")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=sorted(PROTOCOLS),
                   help=f"training protocol (default: {DEFAULT_PROTOCOL})")
    add_int(p, "--epochs", range=(0, 100_000), metavar="E",
            help="epochs (default: the protocol's; 0 = score the untrained model)")
    add_int(p, "--seeds", range=(1, 1000), default=3, metavar="N", help="seeds (default: 3)")
    p.add_argument("--image-model", default="auto", metavar="M",
                   help="auto (nfnet_l0 if cached, else efficientnet_lite0), efficientnet_lite0, "
                        "or timm:NAME")
    p.add_argument("--text-model", default="auto", metavar="M",
                   help="auto (bert-base-uncased if cached, else minilm), minilm, a Hugging Face "
                        "name or folder; NAME@cls / NAME@mean picks the pooling")
    p.add_argument("--no-pretrained", action="store_true",
                   help="random image-encoder weights (smoke tests only)")
    p.add_argument("--freeze-image", action="store_true",
                   help="keep the image encoder frozen (features cached; only the head trains)")
    add_int(p, "--image-size", range=IMAGE_SIZE_RANGE, metavar="PX",
            help="image size (protocol: 224)")
    add_int(p, "--batch-size", range=(1, 65_536), metavar="B",
            help="batch size (protocol's default)")
    p.add_argument("--lr", type=float, metavar="LR", help="learning rate (protocol's default)")
    add_int(p, "--eval-every", range=(1, 100_000), metavar="K",
            help="score the test set every K epochs and at the last (default: ~5 points)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--cache", metavar="DIR",
                   help="cache of features and finished seeds (default: $GITD_CACHE or "
                        "~/.cache/gitd); an identical evaluation is not run again")
    add_int(p, "--workers", range=(0, 256), metavar="W",
            help="image decoding worker processes (0: decode in the main process)")
    p.add_argument("--out", metavar="results.json",
                   help="write every seed's per-epoch metrics, the config and the summary here")
    p.add_argument("--report-best-on-test", action="store_true",
                   help="also print the best epoch ON TEST (optimistic; for comparison with "
                        "papers only)")
    return p


def run(args: argparse.Namespace) -> int:
    from gitd.evaluation.evaluate import evaluate, format_table
    results = evaluate(
        args.train, args.test, val=args.val, images=args.images, test_images=args.test_images,
        val_images=args.val_images, train_split=args.train_split, test_split=args.test_split,
        val_split=args.val_split, allow_test_overlap=args.allow_test_overlap,
        protocol=args.protocol, epochs=args.epochs, seeds=args.seeds,
        image_model=args.image_model, text_model=args.text_model,
        pretrained=not args.no_pretrained, freeze_image=args.freeze_image,
        image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
        eval_every=args.eval_every, report_best_on_test=args.report_best_on_test,
        device=args.device, cache=args.cache, workers=args.workers, out=args.out)
    print(format_table(results))
    if args.out:
        print(f"results: {args.out}")
    return 0
