"""One command for the field's comparison table: make every method's set at every number of
pairs (``gitd select`` / ``gitd distill``), add sets made elsewhere, evaluate each with the same
protocol, and write one folder ``gitd report`` renders.

Above the methods and the evaluation (it drives both), below the command line. Public API:
``gitd.benchmark.run.run_benchmark(data, test, out, methods=..., pairs=..., extras=[...],
**evaluate_settings)``.
"""
