"""The 'Adding a method' example of docs/models.md, dropped into the methods package as the new
file it describes, is found, configured from the CLI's flags and runs end to end."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import gitd.methods
from gitd import registry
from gitd.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_the_documented_method_is_one_file(shapes, tmp_path, monkeypatch):
    code = re.search(r"```python\n# src/gitd/methods/blur.py\n(.*?)```", DOC.read_text(),
                     re.S).group(1)
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "blur.py").write_text(code)
    monkeypatch.setattr(gitd.methods, "__path__", [*gitd.methods.__path__, str(folder)])
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    try:
        out = tmp_path / "out"
        assert main(["distill", str(shapes), "--method", "blur", "--preset", "tiny", "--pairs",
                     "2", "--num-captions", "1", "--out", str(out), "--device", "cpu",
                     "--quiet"]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["method"] == "blur" and manifest["config"]["num_captions"] == 1
        assert set(manifest["stages"]) == {"cluster", "caption"}
        assert manifest["models"]["captioner"]["name"] == "tiny-blip"
        assert len(json.loads((out / "annotations.json").read_text())) == 2
    finally:
        registry._METHODS["distill"].pop("blur", None)
        sys.modules.pop("gitd.methods.blur", None)
