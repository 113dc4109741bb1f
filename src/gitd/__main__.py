from gitd.cli import main

# The guard matters: spawn-based worker pools (DataLoader, ProcessPoolExecutor) re-import
# __main__ in every worker.
if __name__ == "__main__":
    raise SystemExit(main())
