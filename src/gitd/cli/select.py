"""`gitd select DATA --method M --pairs K --out OUT`: coreset baselines in gitd's output format."""

from __future__ import annotations

from gitd.cli.options import IMAGE_SIZE_RANGE, SEED_RANGE, add_int
from gitd.config import INT_RANGES
from gitd.methods.coreset import CAPTION_POLICIES, METHODS


def add_parser(sub):
    p = sub.add_parser(
        "select", help="pick K real pairs with a coreset baseline (random, herding, ...)",
        description="Select K real image-caption pairs of DATA and write them to OUT in the same "
                    "format as 'gitd distill' (images copied, annotations.json, metadata.jsonl, "
                    "manifest.json). herding and kcenter work on L2-normalised image ++ text "
                    "features of the evaluation encoders (cached); forgetting counts forgetting "
                    "events in a short training of the retrieval model on the full set; full "
                    "keeps every pair. See docs/coresets.md.")
    p.add_argument("data", help="annotation file or folder (any format gitd reads)")
    p.add_argument("--method", "-m", required=True, choices=METHODS)
    add_int(p, "--pairs", "-k", range=INT_RANGES["pairs"], help="number of pairs (not needed for full)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    add_int(p, "--seed", range=SEED_RANGE, default=0, help="seed of the selection (default 0)")
    p.add_argument("--caption", choices=CAPTION_POLICIES, default="longest",
                   help="which captions go with a selected image (default: the longest, as "
                        "GITD's /T ablation)")
    p.add_argument("--images", metavar="ROOT", help="image root for relative paths")
    p.add_argument("--split", default="train",
                   help="split of a Karpathy file (default train, which includes restval) or "
                        "sub-folder of a Hugging Face split layout (DATA/train/metadata.jsonl)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input row")
    p.add_argument("--allow-outside-root", action="store_true")
    p.add_argument("--image-model", default="auto", help="evaluation image encoder for features")
    p.add_argument("--text-model", default="auto", help="evaluation text encoder for features")
    add_int(p, "--image-size", range=IMAGE_SIZE_RANGE, default=224,
            help="image size for features (default 224)")
    add_int(p, "--forgetting-epochs", range=(2, 100_000), default=10,
            help="epochs of the forgetting run (frozen image features; default 10)")
    p.add_argument("--forgetting-learned", choices=("batch", "train-set"), default="batch",
                   help="what counts as right for forgetting: 'batch' (default, Toneva et al.): "
                        "the pair retrieves itself within its mini-batch when presented; "
                        "'train-set': top-1 among the whole training set after each epoch, in "
                        "both directions (strict)")
    p.add_argument("--cache", metavar="DIR", help="feature cache (default: $GITD_CACHE or "
                                                   "~/.cache/gitd)")
    p.add_argument("--device", default="auto")
    return p


def run(args) -> int:
    from gitd.methods.coreset import select_coreset

    out = select_coreset(args.data, args.method, args.pairs, args.out, images=args.images,
                         split=args.split, strict=args.strict,
                         allow_outside_root=args.allow_outside_root, seed=args.seed,
                         image_model=args.image_model, text_model=args.text_model,
                         image_size=args.image_size, cache=args.cache, device=args.device,
                         caption=args.caption, forgetting_epochs=args.forgetting_epochs,
                         forgetting_learned=args.forgetting_learned)
    print(out)
    return 0
