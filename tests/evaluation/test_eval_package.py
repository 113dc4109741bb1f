"""``from gitd.evaluation import evaluate`` (issue 18: it raised RecursionError)."""

import os
import subprocess
import sys

import pytest

ORDERS = {
    "package first": "from gitd.evaluation import evaluate as a\n"
                     "import gitd.evaluation.evaluate as b\n",
    "module first": "import gitd.evaluation.evaluate as b\n"
                    "from gitd.evaluation import evaluate as a\n",
}


@pytest.mark.parametrize("order", ORDERS)
def test_from_gitd_evaluation_import_evaluate(order):
    """In a fresh interpreter, in either import order: one object, callable as the function,
    holding the module's names; format_table too."""
    code = ORDERS[order] + (
        "from gitd.evaluation import format_table\n"
        "import gitd.evaluation as p\n"
        "assert a is b is p.evaluate and callable(a)\n"
        "assert a.evaluate.__name__ == 'evaluate' and a.format_table is format_table\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_calling_the_module_is_calling_evaluate(monkeypatch):
    from gitd.evaluation import evaluate as module

    seen = []
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: seen.append((a, k)) or "done")
    assert module("train.json", "test.json", seeds=1) == "done"
    assert seen == [(("train.json", "test.json"), {"seeds": 1})]
