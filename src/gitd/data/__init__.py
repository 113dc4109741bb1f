"""Reading users' datasets: formats, validation (``check``) and the stand-in (``shapes``)."""

from gitd.data.formats import FORMATS, dataset_fingerprint, load_dataset, verify_image_files
from gitd.data.records import Dataset, Problem, Record

__all__ = ["FORMATS", "Dataset", "Problem", "Record", "dataset_fingerprint", "load_dataset",
           "verify_image_files"]
