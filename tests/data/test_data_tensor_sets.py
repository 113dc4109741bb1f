"""Reading other methods' distilled tensor files (gitd.data.tensor_sets): every problem is one
line naming the file."""

import pytest
import torch

from gitd.data.tensor_sets import is_tensor_set, load_tensor_set
from gitd.errors import DataError


@pytest.mark.parametrize("content,needle", [
    ({"image": torch.zeros(2, 3, 8, 8)}, "no text key"),
    ({"image": torch.zeros(2, 3, 8, 8), "text": torch.zeros(3, 4)}, "2 images but 3 text"),
    ({"image": torch.zeros(2, 8, 8), "text": torch.zeros(2, 4)}, "'image' must be a 4-D tensor"),
    ({"image": torch.full((2, 3, 8, 8), float("nan")), "text": torch.zeros(2, 4)}, "NaN"),
    ({"image": torch.zeros(2, 3, 8, 8), "text": torch.zeros(2, 4),
      "similarity_mat": torch.eye(3)}, "'similarity_mat' is [3, 3], expected [2, 2]"),
    ([1, 2], "holds a list"),
])
def test_bad_tensor_files_name_the_problem(tmp_path, content, needle):
    path = tmp_path / "distilled_1.pt"
    torch.save(content, path)
    with pytest.raises(DataError) as err:
        load_tensor_set(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_mtt_vl_partner_and_folder_problems(tmp_path):
    torch.save(torch.zeros(2, 3, 8, 8), tmp_path / "images_best.pt")
    with pytest.raises(DataError, match="labels_best.pt: file not found"):
        load_tensor_set(tmp_path / "images_best.pt")
    (tmp_path / "lors").mkdir()
    for i in (1, 2):
        torch.save({"image": torch.zeros(1, 3, 8, 8), "text": torch.zeros(1, 4)},
                   tmp_path / "lors" / f"distilled_{i}.pt")
    with pytest.raises(DataError, match="holds 2 LoRS files"):
        load_tensor_set(tmp_path / "lors")
    (tmp_path / "plain.pt").write_bytes(b"not a tensor file, plain text\n" * 4)
    with pytest.raises(DataError, match="not a file written by torch.save"):
        load_tensor_set(tmp_path / "plain.pt")


def test_what_counts_as_a_tensor_set(tmp_path):
    (tmp_path / "a").mkdir()
    torch.save(torch.zeros(1), tmp_path / "a" / "images_best.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "annotations.json").write_text("[]")
    torch.save(torch.zeros(1), tmp_path / "out" / "distilled_1.pt")
    assert is_tensor_set(tmp_path / "x.pt") and is_tensor_set(tmp_path / "a")
    assert not is_tensor_set(tmp_path / "out")  # a gitd output folder is annotations
    assert not is_tensor_set(tmp_path / "train.json")
