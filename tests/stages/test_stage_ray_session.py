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


@pytest.mark.parametrize("given, env, expected", [
    (None, "10.0.0.5:6379", "10.0.0.5:6379"), ("auto", "ray://head:10001", "ray://head:10001"),
    ("", None, "auto"), ("auto", None, "auto"), ("10.0.0.7:6379", "10.0.0.5:6379", "10.0.0.7:6379"),
    ("local", "10.0.0.5:6379", None)])
def test_connect_resolves_the_address_through_ray_address(monkeypatch, given, env, expected):
    """--ray auto (or bare --ray) joins $RAY_ADDRESS when set; an explicit address or 'local'
    wins. Ray's own client is replaced here: only what gitd passes to ray.init is checked."""
    import types

    calls = []
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: False
    ray.init = lambda **kw: calls.append(kw)
    data = types.ModuleType("ray.data")
    context = types.SimpleNamespace(enable_progress_bars=True)
    data.DataContext = types.SimpleNamespace(get_current=lambda: context)
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.data", data)
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert ray_session.connect(given) is ray
    assert len(calls) == 1 and calls[0].get("address") == expected
    assert context.enable_progress_bars is False  # gitd draws its own bar
