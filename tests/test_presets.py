"""The one registry of presets (``gitd.presets``): methods', finetune's and caption's, made the
same way, typos caught when a table is registered."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from gitd.errors import ConfigError
from gitd.presets import add_preset_argument, all_presets, presets_of, register_presets
from gitd.registry import all_methods
from gitd.settings import Interval, setting


@dataclass(frozen=True)
class Knobs:
    preset: str | None = None
    steps: int = setting(4, Interval(int, 1, None), "steps")
    size: int = setting(8, Interval(int, 1, None), "size")


def test_defaults_then_preset_then_values():
    table = register_presets("test:knobs", Knobs, {"big": {"size": 64}, "long": {"steps": 40}},
                             default="big", what="the knobs", notes={"big": "a big one"})
    assert table.make() == Knobs(preset="big", steps=4, size=64)
    assert table.make("long", size=2) == Knobs(preset="long", steps=40, size=2)
    with pytest.raises(ConfigError, match=r"unknown preset 'huge' for the knobs; choose one of: "
                                          r"big, long"):
        table.make("huge")
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) color for the knobs"):
        table.make(color=1)
    p = argparse.ArgumentParser()
    add_preset_argument(p, [table], "knob preset")
    flag = next(a for a in p._actions if a.dest == "preset")
    assert flag.choices == ["big", "long"]
    assert flag.help == "knob preset: big (a big one); long; default big"


def test_a_typo_in_a_preset_fails_when_it_is_registered():
    with pytest.raises(TypeError, match="sets colour, which Knobs does not have"):
        register_presets("test:typo", Knobs, {"bad": {"colour": 1}})
    with pytest.raises(TypeError, match="default preset 'x'"):
        register_presets("test:typo", Knobs, {"a": {}}, default="x")


def test_every_command_s_presets_are_in_the_one_registry():
    from gitd.stages.caption_synthesis import CaptionCommandSettings, command_settings
    from gitd.stages.finetune import FinetuneSettings

    methods = all_methods()  # discovers them, which registers their presets
    tables = all_presets()
    for cls in methods:
        assert tables[f"{cls.kind}:{cls.name}"].names == tuple(cls.presets)
    assert presets_of("finetune").names == ("paper", "tiny", "random-paper")
    assert presets_of("caption").names == ("paper", "tiny")
    assert FinetuneSettings.from_preset("tiny").preset == "tiny"
    assert FinetuneSettings.from_preset().diffusion_model == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert isinstance(command_settings("tiny"), CaptionCommandSettings)
    assert command_settings().vlm == "llava-hf/llava-1.5-7b-hf"
    with pytest.raises(ConfigError, match="unknown preset 'x' for gitd finetune"):
        FinetuneSettings.from_preset("x")
