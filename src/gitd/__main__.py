import sys

try:
    from gitd.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports: still one line, still 130
    print("gitd: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

# The guard matters: spawn-based worker pools (DataLoader, ProcessPoolExecutor) re-import
# __main__ in every worker.
if __name__ == "__main__":
    raise SystemExit(main())
