"""The method registry, and the walk over every field of every registered method.

For each field: an invalid value is a one-line ``ConfigError`` naming the field; a different
valid value changes the cache key of exactly the stages that use the field and those after them,
unless the field is declared as not affecting results, in which case no key changes; and the
field's generated command-line flag parses to that value.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from gitd.errors import ConfigError
from gitd.models import resolve_dtype
from gitd.models.roles import Runtime
from gitd.registry import (KINDS, Method, MethodSettings, all_methods, get_method, list_methods,
                           register_method)
from gitd.settings import (Boolean, Interval, Options, PathText, Text, add_arguments, declared,
                           flags_of, key_dict, setting)

DATA_KEY = "d" * 16
IDENTITY = ("method",)  # which class the settings belong to: the registry's business


def base_settings(cls: type[Method]) -> MethodSettings:
    """The tiny preset where there is one, with every switch on (and extra captions asked
    for), so that every stage runs and every field is used."""
    preset = "tiny" if "tiny" in cls.presets else None
    s = cls.configure(preset, pairs=4) if cls.needs_pairs_or_default() else cls.configure(preset)
    switches = {f.name: True for f, d in declared(s) if isinstance(d.constraint, Boolean)}
    if "extra_captions" in {f.name for f in dataclasses.fields(s)}:
        switches["extra_captions"] = 1
    return dataclasses.replace(s, **switches, device="cpu")


def variants(cls: type[Method]) -> list[MethodSettings]:
    """The base settings, then one variant per other value of each option field that picks a
    strategy (EDGE's ``prompts``): a field that only one strategy uses is keyed there."""
    s = base_settings(cls)
    out = [s]
    for f, d in declared(s):
        if isinstance(d.constraint, Options) and f.name not in ("dtype", "device"):
            out += [dataclasses.replace(s, **{f.name: v}) for v in d.constraint.values
                    if v != getattr(s, f.name)]
    return out


@pytest.fixture(scope="module")
def finetuned_runs(tmp_path_factory):
    """Trained-parameter files (no tensors needed for keys) for a settings' base model."""
    from gitd.stages.finetune.state import TRAINED, save_trained

    root = tmp_path_factory.mktemp("runs")

    def make(s) -> str:
        run = root / f"{s.diffusion_model}-{s.seed}"
        if not run.exists():
            run.mkdir()
            save_trained(run / TRAINED, {}, {"model": s.diffusion_model,
                                             "revision": s.diffusion_revision, "seed": s.seed})
        return str(run)
    return make


def runtime_of(s) -> Runtime:
    # Resolved without asking whether the device exists, so a test on a CPU machine can plan
    # a CUDA run.
    device = torch.device("cpu" if s.device == "auto" else s.device)
    return Runtime(device, resolve_dtype(getattr(s, "dtype", "float32"), device))


def plan_of(cls, s):
    """The plan a run of these settings runs (with a distillation's caption synthesis)."""
    build = getattr(cls, "full_plan", cls.plan)
    return build(s, runtime_of(s))


def keys(cls, s) -> dict[str, str]:
    return plan_of(cls, s).keys(DATA_KEY)


def own_settings(cls, s) -> dict[str, dict]:
    return {e.name: key_dict(e.settings) for e in plan_of(cls, s)}


def other_value(name: str, c, value, cls=None):
    """A valid value different from ``value``."""
    if name == "preset":
        return next(p for p in cls.presets if p != value)
    # Keys record the resolved device and dtype: pick values that resolve differently from the
    # base (auto is float32 on a CPU).
    if name == "device":
        return "cuda" if value != "cuda" else "cpu"
    if name == "dtype":
        return "bfloat16" if value != "bfloat16" else "float32"
    if isinstance(c, Boolean):
        return not value
    if isinstance(c, Options):
        return next(v for v in c.values if v != value)
    if isinstance(c, PathText):
        return "another-folder"
    if isinstance(c, Text):
        return "other" if not value else value + "-other"
    if isinstance(c, Interval):
        start = value if value is not None else (c.low if c.low is not None else 1)
        step = c.multiple_of or (1 if c.kind is int else 0.05)
        for cand in (start + step, start - step, start + 2 * step, start / 2):
            cand = c.kind(cand)
            if cand != value and c.problem(cand) is None:
                return cand
    raise AssertionError(f"no other value for {name}")


def bad_values(c) -> list:
    if isinstance(c, Boolean):
        return ["yes", 1]
    if isinstance(c, Options):
        return ["no-such-option", 3]
    if isinstance(c, PathText):
        return [5]
    if isinstance(c, Text):
        return [5] if c.empty else ["", 5]
    if isinstance(c, Interval):
        out = ["many", True]
        if c.low is not None:
            out.append(c.kind(c.low - 1))
        if c.high is not None:
            out.append(c.kind(c.high + 1))
        if c.kind is float:
            out.append(math.nan)
        return out
    raise AssertionError(c)


def downstream(cls, s, names: set[str]) -> set[str]:
    return plan_of(cls, s).downstream(names)


def fields_of_every_method():
    for cls in all_methods():
        for f, decl in declared(cls.Settings):
            if f.name not in IDENTITY:
                yield pytest.param(cls, f.name, decl, id=f"{cls.kind}:{cls.name}:{f.name}")


@pytest.fixture(autouse=True, scope="module")
def _needs_pairs_helper():
    # Distillations need --pairs; "full" does not take it.
    Method.needs_pairs_or_default = classmethod(lambda cls: getattr(cls, "needs_pairs", True))
    yield
    del Method.needs_pairs_or_default


@pytest.mark.parametrize("cls,name,decl", list(fields_of_every_method()))
def test_every_field_validated_keyed_and_a_flag(cls, name, decl, finetuned_runs):
    candidates = variants(cls)
    s = candidates[0]
    cls.validate(s)
    value = getattr(s, name)

    # An invalid value: one line naming the field.
    for bad in bad_values(decl.constraint) + (["no-such-preset"] if name == "preset" else []):
        with pytest.raises(ConfigError) as err:
            cls.validate(dataclasses.replace(s, **{name: bad}))
        msg = str(err.value)
        assert msg.startswith(f"{name} ") and "\n" not in msg, msg

    # A different valid value: the keys of exactly the stages that use the field (and those
    # after them) change; none if the field is declared as not affecting results. A field that
    # one strategy alone uses is checked in the first variant where it changes a key.
    for s in candidates:
        new = (finetuned_runs(s) if name == "finetuned"
               else other_value(name, decl.constraint, getattr(s, name), cls))
        other = dataclasses.replace(s, **{name: new})
        cls.validate(other)
        before, after = keys(cls, s), keys(cls, other)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        if changed:
            break
    value = getattr(s, name)
    if not decl.affects_results:
        assert not changed, f"{name} is declared neutral but changes {changed}"
    else:
        assert changed, f"{name} affects results but changes no stage key"
        own_before, own_after = own_settings(cls, s), own_settings(cls, other)
        users = {k for k in set(own_before) | set(own_after)
                 if own_before.get(k) != own_after.get(k)}
        assert changed == downstream(cls, other, users) | downstream(cls, s, users)

    # The generated flag parses to the value.
    if decl.cli:
        p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
        add_arguments(p, [(cls.name, cls.Settings)])
        new = getattr(other, name)
        flags = flags_of(name, decl)
        if isinstance(decl.constraint, Boolean):
            argv = [flags[0]] if new else [flags[-1]]
            if len(flags) == 1:  # a lone --no-x flag can only say False
                argv = [] if new else flags[:1]
        else:
            argv = [flags[0], str(new)]
        assert vars(p.parse_args(argv)).get(name, value) == new


@pytest.mark.parametrize("field,stages", [
    # The bug this registry fixed: revisions were missing from the caption and img2img keys.
    ("captioner_revision", {"caption"}),
    ("score_revision", {"img2img", "caption"}),
    ("num_captions", {"caption"}),
    ("strength", {"img2img", "caption"}),
    ("encode_batch_size", {"encode", "cluster", "img2img", "caption"}),
    ("encode_workers", set()),
    # Clustering latents at another side: every stage, and the medoids' own encode appears.
    ("cluster_resolution", {"encode", "cluster", "encode-medoids", "img2img", "caption"}),
    # Clustering in another VAE's latents or in feature space: the medoids' own encode appears.
    ("cluster_vae", {"encode", "cluster", "encode-medoids", "img2img", "caption"}),
    ("cluster_space", {"encode", "features", "cluster", "encode-medoids", "img2img",
                       "caption"}),
    ("vae", {"encode", "cluster", "img2img", "caption"}),
    # Ray writes the same bytes as the plain run.
    ("ray", set()),
    ("ray_workers", set()),
    ("work", set()),
    ("preset", set()),
])
def test_gitd_fields_change_exactly_these_stages(field, stages):
    cls = get_method("gitd")
    s = base_settings(cls)
    decl = dict((f.name, d) for f, d in declared(s))[field]
    other = dataclasses.replace(s, **{field: other_value(field, decl.constraint,
                                                          getattr(s, field), cls)})
    before, after = keys(cls, s), keys(cls, other)
    # The extra captions (base_settings asks for them) follow the images, and only them.
    assert {k for k in set(before) | set(after) if before.get(k) != after.get(k)} == (
        stages | {"caption_synthesis"} if "img2img" in stages else stages)


def test_the_seed_reaches_the_latents_only_through_random_weights():
    # The posterior mean does not depend on the seed, but a random-weight VAE does.
    cls = get_method("gitd")
    for preset, encode_changes in (("tiny", True), ("paper", False)):
        s = dataclasses.replace(cls.configure(preset, pairs=4), device="cpu")
        before, after = keys(cls, s), keys(cls, dataclasses.replace(s, seed=1))
        assert (before["encode"] != after["encode"]) is encode_changes, preset
        assert before["cluster"] != after["cluster"]


def test_pds_revisions_change_their_stages():
    cls = get_method("pds")
    s = base_settings(cls)
    # The extra captions follow the images (unclip), not the captions.
    for field, stages in (("score_revision", {"embed", "prototypes", "unclip", "caption",
                                              "caption_synthesis"}),
                          ("unclip_revision", {"unclip", "caption", "caption_synthesis"}),
                          ("captioner_revision", {"caption"})):
        after = keys(cls, dataclasses.replace(s, **{field: "abc"}))
        before = keys(cls, s)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed == stages, field


def test_lookup_and_unknown_names():
    assert {"gitd", "pds", "edge"} <= set(list_methods("distill"))
    assert {"random", "herding", "kcenter", "forgetting", "pds", "full"} <= set(
        list_methods("select"))
    assert get_method("pds").kind == "distill" and get_method("pds", "select").kind == "select"
    with pytest.raises(ConfigError, match=r"unknown distill method 'nosuch'; known: .*gitd"):
        get_method("nosuch")
    with pytest.raises(ConfigError, match=r"unknown select method 'nosuch'; known: random"):
        get_method("nosuch", "select")
    assert set(KINDS) == {"distill", "select"}


def test_cli_unknown_method_is_one_line_exit_2(tmp_path):
    for cmd in (["distill", "x", "--pairs", "2"], ["select", "x", "--pairs", "2"]):
        res = subprocess.run([sys.executable, "-m", "gitd", *cmd, "--out", str(tmp_path / "o"),
                              "--method", "nosuch"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "unknown" in lines[0] and "known: " in lines[0], lines
    assert "gitd" in lines[0] or "random" in lines[0]


def test_settings_belong_to_their_method():
    s = get_method("gitd").configure("tiny")
    with pytest.raises(ConfigError, match="needs PdsSettings"):
        get_method("pds").validate(s)
    with pytest.raises(ConfigError, match="method must be 'gitd'"):
        get_method("gitd").validate(dataclasses.replace(s, method="pds"))


@pytest.fixture
def toy_method():
    """A method registered from a test, removed afterwards."""
    from gitd import registry

    @dataclasses.dataclass(frozen=True)
    class ToySettings(MethodSettings):
        pairs: int = setting(3, Interval(int, 1, None), "pairs", cli=False)
        wiggle: float = setting(0.5, Interval(float, 0, 1), "how much to wiggle")

    @register_method("toy-test")
    class Toy(Method):
        """toy: a method that exists only in this test."""

        Settings = ToySettings
        presets = {"small": {"wiggle": 0.1}}
        default_preset = "small"

    yield Toy
    registry._METHODS["distill"].pop("toy-test")


def test_a_registered_method_is_everywhere_at_once(toy_method):
    from gitd.cli import build_parser
    from gitd.config import make_config

    s = make_config(method="toy-test")
    assert (type(s).__name__, s.wiggle) == ("ToySettings", 0.1)
    args = build_parser().parse_args(["distill", "d", "--pairs", "2", "--out", "o", "--method",
                                      "toy-test", "--wiggle", "0.3"])
    assert args.wiggle == 0.3
    assert "toy-test: toy: a method" in " ".join(build_parser()._subparsers._group_actions[0]
                                                .choices["distill"].description.split())
    with pytest.raises(ConfigError, match="wiggle must be in \\[0, 1\\], got 2.0"):
        make_config(method="toy-test", wiggle=2.0).validate()


def test_discovery_finds_a_new_module_in_the_methods_package(tmp_path, monkeypatch):
    """Adding a method is adding a file to gitd/methods/: nothing else registers it."""
    import gitd.methods
    from gitd import registry

    (tmp_path / "wobble_test.py").write_text(textwrap.dedent('''
        from gitd.registry import Method, register_method

        @register_method("wobble-test", kind="select")
        class Wobble(Method):
            """wobble: found by discovery."""
    '''))
    monkeypatch.setattr(gitd.methods, "__path__", [*gitd.methods.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    try:
        assert "wobble-test" in list_methods("select")
    finally:
        registry._METHODS["select"].pop("wobble-test", None)
        sys.modules.pop("gitd.methods.wobble_test", None)
