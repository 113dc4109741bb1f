"""Reading image-caption datasets in the formats users already have.

``load_dataset`` detects the format from the file's content (not its name):

* BLIP/LoRS annotation JSON: ``[{"image": ..., "caption": str | [str, ...], "image_id"?}, ...]``:
  the training layout (one row per caption, rows of one image sharing an ``image_id``; gitd's own
  ``OUT/annotations.json``) and the test layout (a caption list per image) both group into one
  record per image.
* Karpathy split files: ``{"images": [{"filename", "filepath"?, "split", "sentences": [...]}]}``.
* COCO captions: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.
* Hugging Face imagefolder: a folder with ``metadata.jsonl`` or ``metadata.csv`` (``file_name``
  plus a text column), or such a file itself.
* WebDataset: a tar shard, a folder of ``*.tar`` shards or a brace pattern
  (``data/{00000..00331}.tar``) of ``KEY.jpg|png|webp`` + ``KEY.txt`` samples
  (``gitd.data.shards``); records' images are ``TarMember``s, read by offset.

Rows that cannot be used become ``Problem``s on the returned ``Dataset`` (or raise ``DataError``
with ``strict=True``); a file that cannot be read at all raises ``DataError`` naming the file.
Images are not opened unless ``verify_images=True``.

One module per format (``blip``, ``karpathy``, ``coco``, ``imagefolder``; WebDataset is
``gitd.data.shards``), ``builder`` (rows to records, shared by all), ``locate`` (where the
annotations are), ``detect`` (which format), ``load`` (``load_dataset``), ``fingerprint`` (what
cache keys see of a dataset) and ``verify`` (decoding every image).
"""

from gitd.data.formats.builder import HugeNumber, RecordBuilder
from gitd.data.formats.fingerprint import (dataset_fingerprint, images_fingerprint,
                                           note_input_change)
from gitd.data.formats.imagefolder import TEXT_COLUMNS
from gitd.data.formats.karpathy import TRAIN_SPLITS
from gitd.data.formats.load import load_dataset, read_dataset
from gitd.data.formats.verify import VerifyResult, verify_image_files

FORMATS = ("blip", "karpathy", "coco", "imagefolder", "webdataset")

__all__ = ["FORMATS", "HugeNumber", "RecordBuilder", "TEXT_COLUMNS", "TRAIN_SPLITS",
           "VerifyResult", "dataset_fingerprint", "images_fingerprint", "load_dataset",
           "note_input_change", "read_dataset", "verify_image_files"]
