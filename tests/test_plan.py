"""The plan and its executor: versioned keys, what a re-run recomputes, model release, the
manifest's record of each key's inputs. Real stage folders in a temporary work folder."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest

from gitd.plan import Plan, PlanRunner, stage_payload
from gitd.store import atomic_write_json, fingerprint, read_json

DATA_KEY = "d" * 16


@dataclasses.dataclass(frozen=True)
class Step:
    version: ClassVar[int] = 1

    value: int


@dataclasses.dataclass(frozen=True)
class Other:
    version: ClassVar[int] = 1

    value: int


@dataclasses.dataclass(frozen=True)
class Middle:
    """b's settings: a class of its own, so that its version is b's alone."""

    version: ClassVar[int] = 1

    value: int


class Recorder:
    """Duck-typed ``Models``: records what is built and released, in order."""

    device = "cpu"
    dtype = None

    def __init__(self, shares=None):
        self.events: list[tuple[str, str]] = []
        self.shares = shares or {}

    def get(self, role):
        self.events.append(("get", role))
        return role

    def release(self, role):
        self.events.append(("release", role))

    def requires(self, role):
        return {role, *self.shares.get(role, ())}

    def factory(self, role):
        return role


def counting_stage(computed: list[str]):
    """A stage function that writes ``value`` plus what it read, counting computations."""
    def run(call):
        def compute(stage):
            computed.append(call.name)
            ups = [call[u] for u in call.entry.upstream]
            atomic_write_json(stage.path / "out.json", {"value": call.settings.value + sum(ups)})

        return call.whole(compute, lambda stage: read_json(stage.path / "out.json")["value"])
    return run


def chain(computed, b_settings=None) -> tuple[Plan, dict]:
    """a -> b -> c, and d beside them (it reads only the data)."""
    p = Plan()
    run = counting_stage(computed)
    a = p.add("a", Step(1), run)
    b = p.add("b", b_settings or Middle(10), run, upstream=(a,))
    c = p.add("c", Step(100), run, upstream=(b,))
    d = p.add("d", Other(1000), run)
    return p, {"a": a, "b": b, "c": c, "d": d}


def test_a_bumped_version_recomputes_its_stage_and_what_is_downstream_only(tmp_path,
                                                                            monkeypatch):
    computed: list[str] = []
    plan, e = chain(computed)
    results = PlanRunner(tmp_path, plan, DATA_KEY, Recorder()).run()
    assert computed == ["a", "b", "c", "d"]
    assert [results[e[n]] for n in "abcd"] == [1, 11, 111, 1000]

    computed.clear()
    PlanRunner(tmp_path, chain(computed)[0], DATA_KEY, Recorder()).run()
    assert computed == []  # everything cached

    # The change that alters b's output bumps b's version: b and c are recomputed, a and d not.
    before = chain([])[0].keys(DATA_KEY)
    monkeypatch.setattr(Middle, "version", 2)
    plan, _ = chain(computed)
    after = plan.keys(DATA_KEY)
    assert {k for k in before if before[k] != after[k]} == {"b", "c"}
    computed.clear()
    PlanRunner(tmp_path, plan, DATA_KEY, Recorder()).run()
    assert computed == ["b", "c"]


def test_the_version_and_the_settings_class_are_part_of_the_key():
    p = Plan()
    a = p.add("a", Step(1), lambda call: None)
    payload = stage_payload(a, {"data": DATA_KEY})
    assert payload == {"stage": "a", "settings_class": "Step", "version": 1,
                       "settings": {"value": 1}, "upstream": {"data": DATA_KEY}}
    q = Plan()
    q.add("a", Other(1), lambda call: None)
    assert p.keys(DATA_KEY) != q.keys(DATA_KEY)  # same fields, another stage type
    r = Plan()
    r.add("b", Step(1), lambda call: None)
    assert p.keys(DATA_KEY)["a"] != r.keys(DATA_KEY)["b"]  # another stage name


def test_a_settings_class_without_a_version_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Unversioned:
        value: int

    with pytest.raises(TypeError, match="declares no stage version"):
        Plan().add("a", Unversioned(1), lambda call: None)


def test_a_stage_reads_only_what_it_declares(tmp_path):
    p = Plan()
    run = counting_stage([])
    a = p.add("a", Step(1), run)

    def sneaky(call):
        return call[a]  # not declared upstream: its key would not follow a

    p.add("b", Step(2), sneaky)
    with pytest.raises(KeyError, match="does not declare it upstream"):
        PlanRunner(tmp_path, p, DATA_KEY, Recorder()).run()


def test_models_are_released_after_the_last_stage_that_needs_them(tmp_path):
    p = Plan()

    def uses(*names):
        def run(call):
            for n in names:
                call.model(n)
            return call.value(lambda: None)
        return run

    p.add("encode", Step(1), uses("vae"), roles={"vae": "vae"}, cached=False)
    p.add("score", Step(2), uses("score"), roles={"score": "score"}, cached=False)
    # img2img shares the VAE: the VAE lives until img2img is done.
    p.add("img2img", Step(3), uses("pipe", "score"), roles={"pipe": "img2img",
                                                            "score": "score"}, cached=False)
    p.add("caption", Step(4), uses("captioner"), roles={"captioner": "captioner"},
          cached=False)
    models = Recorder(shares={"img2img": ("vae",)})
    PlanRunner(None, p, DATA_KEY, models).run()
    assert models.events == [
        ("get", "vae"), ("get", "score"), ("get", "img2img"), ("get", "score"),
        ("release", "img2img"), ("release", "score"), ("release", "vae"),
        ("get", "captioner"), ("release", "captioner")]
    assert p.roles_used(models.requires) == {"vae", "score", "img2img", "captioner"}


def test_the_manifest_records_what_each_key_was_made_of(tmp_path):
    plan, _ = chain([])
    runner = PlanRunner(tmp_path, plan, DATA_KEY, Recorder())
    runner.run()
    described = runner.describe()
    assert list(described) == ["a", "b", "c", "d"]
    c = described["c"]
    assert c["version"] == 1 and c["settings_class"] == "Step" and c["settings"] == {"value": 100}
    assert c["upstream"] == {"b": described["b"]["key"]}
    assert described["a"]["upstream"] == {"data": DATA_KEY}
    # The key is the fingerprint of exactly what the manifest shows, which is also what the
    # stage folder's settings.json holds.
    payload = {k: c[k] for k in ("version", "settings_class", "settings", "upstream")}
    assert fingerprint({"stage": "c", **payload}) == c["key"] == runner.stage_keys["c"]
    on_disk = json.loads((tmp_path / f"c-{c['key']}" / "settings.json").read_text())
    assert on_disk == {"stage": "c", **payload}


def test_a_changed_setting_is_named_in_the_log(tmp_path, caplog):
    PlanRunner(tmp_path, chain([])[0], DATA_KEY, Recorder()).run()
    caplog.set_level("INFO", logger="gitd")
    PlanRunner(tmp_path, chain([], b_settings=Middle(11))[0], DATA_KEY, Recorder()).run()
    assert "b: settings changed (value)" in caplog.text
    assert "c: settings changed (upstream)" in caplog.text
    assert "a: cached" in caplog.text and "d: cached" in caplog.text


def test_cached_stages_need_a_work_folder():
    with pytest.raises(ValueError, match="work folder"):
        PlanRunner(None, chain([])[0], DATA_KEY, Recorder())
