"""`gitd caption OUT --extra N` from the command line, with the tiny preset."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from gitd.cli import main
from gitd.data.output import OutputPair, write_output


def test_caption_command_adds_captions(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pairs = [OutputPair(image=Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                        captions=[f"caption {i}"]) for i in range(2)]
    write_output(tmp_path / "out", pairs, {"method": "random", "seed": 0})
    code = main(["caption", str(tmp_path / "out"), "--extra", "1", "--preset", "tiny",
                 "--out", str(tmp_path / "more"), "--vlm-max-new-tokens", "5", "-q"])
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "more")
    manifest = json.loads((tmp_path / "more" / "manifest.json").read_text())
    assert manifest["caption_synthesis"]["vlm_max_new_tokens"] == 5
    assert main(["caption", str(tmp_path / "nowhere"), "--extra", "1", "--preset", "tiny"]) == 2
    assert "not a gitd output" in capsys.readouterr().err
