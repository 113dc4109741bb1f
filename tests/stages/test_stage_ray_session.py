"""Ray stays optional: a clear one-line error without it, and --ray parses as documented."""

from __future__ import annotations

import sys

import pytest

from gitd.cli import build_parser
from gitd.errors import GitdError
from gitd.stages import ray_session


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(GitdError, match=r"pip install 'gitd\[ray\]'"):
        ray_session.connect("local")


@pytest.mark.parametrize("argv, expected", [([], None), (["--ray"], ""),
                                            (["--ray", "local"], "local"),
                                            (["--ray", "10.0.0.5:6379"], "10.0.0.5:6379")])
def test_ray_flag(argv, expected):
    args = build_parser().parse_args(["distill", "d", "--pairs", "2", "--out", "o", *argv])
    assert getattr(args, "ray", None) == expected


def test_cluster_resolution_is_validated():
    from gitd.config import make_config
    from gitd.errors import ConfigError

    with pytest.raises(ConfigError, match="cluster_resolution must be a multiple of 8"):
        make_config("tiny", cluster_resolution=100).validate()
    args = build_parser().parse_args(["distill", "d", "--pairs", "2", "--out", "o",
                                      "--cluster-resolution", "256"])
    assert args.cluster_resolution == 256
