"""`gitd report` of another method's tensor file, and of its evaluation results (issue 21)."""

import json

import torch

from gitd.cli import main


def _lors(path, n=6, size=16):
    torch.manual_seed(0)
    image = (torch.rand(n, 3, size, size) - 0.45) / 0.27  # about CLIP-normalised
    torch.save({"image": image, "text": torch.randn(n, 32), "similarity_params": [torch.ones(n)],
                "similarity_mat": torch.eye(n) * 0.9 + 0.01, "syn_lr_img": torch.tensor(0.05),
                "syn_lr_txt": torch.tensor(0.02)}, path)
    return path


def test_report_of_a_lors_file(tmp_path, capsys):
    path = _lors(tmp_path / "distilled_300.pt")
    assert main(["report", str(path), "-q"]) == 0
    dest = tmp_path / "distilled_300.report.html"
    assert capsys.readouterr().out.strip() == str(dest)
    html = dest.read_text()
    assert "<title>gitd report: lors file, 6 pairs</title>" in html
    assert html.count('alt="image ') == 6 and 'id="similarity"' in html
    assert "image 0.05" in html and "32-d embeddings" in html
    assert main(["report", str(path), "-q"]) == 0  # its own earlier report is replaced


def test_report_refuses_a_file_that_would_run_code(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"image": Evil()}, tmp_path / "distilled_1.pt")
    assert main(["report", str(tmp_path / "distilled_1.pt"), "-q"]) == 2
    assert "refused" in capsys.readouterr().err and not marker.exists()


def test_results_of_a_tensor_set_name_its_method_and_pairs(tiny_sets, tiny_text, tmp_path):
    from gitd.evaluation.evaluate import evaluate
    from gitd.report.results import read_result

    _, test = tiny_sets
    path = tmp_path / "lors" / "distilled_5.pt"
    path.parent.mkdir()
    _lors(path, n=6, size=32)
    out = tmp_path / "r.json"
    evaluate(path, test, epochs=1, seeds=1, image_model="timm:resnet10t", pretrained=False,
             text_model=tiny_text, image_size=32, batch_size=4, workers=0, cache=False, out=out)
    r = read_result(out)
    assert (r.method, r.pairs) == ("lors", 6)
    assert json.loads(out.read_text())["train_tensors"]["format"] == "lors"
