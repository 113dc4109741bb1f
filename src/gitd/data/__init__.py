"""Reading users' datasets: formats, validation (``check``) and the stand-in (``shapes``)."""

from gitd.data.records import Dataset, Problem, Record

__all__ = ["Dataset", "Problem", "Record"]
