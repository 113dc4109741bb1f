"""Settings several methods share are declared once (``gitd.methods.fields``): every field that
more than one method has carries one rule, one help line and one set of flags."""

from __future__ import annotations

import pytest

from gitd.methods.fields import (ClaraFields, DiffusionModelFields, DiffusionSwitch,
                                 EncodeFields, GenerationFields, PrototypeFields, ScoreFields)
from gitd.registry import get_method, list_methods
from gitd.settings import declared


def declarations(kind: str) -> dict[str, dict[str, object]]:
    """field -> {method: its declaration} over the methods of ``kind``."""
    out: dict[str, dict[str, object]] = {}
    for name in list_methods(kind):
        for f, d in declared(get_method(name, kind).Settings):
            out.setdefault(f.name, {})[name] = d
    return out


@pytest.mark.parametrize("kind", ["distill", "select"])
def test_a_shared_field_is_declared_once(kind):
    twice = {field: owners for field, owners in declarations(kind).items() if len(owners) > 1}
    assert twice, "no field is shared"
    for field, owners in twice.items():
        first = next(iter(owners.values()))
        differ = [m for m, d in owners.items() if d is not first and d != first]
        assert not differ, f"{field} is declared again by {differ}"


def test_edge_declares_only_its_own_fields():
    # EDGE used to re-declare twelve of GITD's and PDS's fields; now only its own remain.
    edge = get_method("edge").Settings
    own = set(edge.__dict__.get("__annotations__", {}))
    assert own == {"finetuned", "prompts", "guidance_scale", "negative_prompt",
                   "generate_batch_size"}  # the last three: other defaults (``inherit``)
    groups = (ScoreFields, DiffusionModelFields, GenerationFields, EncodeFields, ClaraFields,
              PrototypeFields)
    assert all(issubclass(edge, g) for g in groups)
    assert issubclass(get_method("gitd").Settings, DiffusionSwitch)
    assert issubclass(get_method("pds").Settings, DiffusionSwitch)


def test_papers_defaults_survive_in_the_groups():
    gitd, pds, edge = (get_method(m).Settings() for m in ("gitd", "pds", "edge"))
    assert (gitd.guidance_scale, pds.guidance_scale, edge.guidance_scale) == (8.0, 5.0, 7.5)
    assert (gitd.negative_prompt, pds.negative_prompt, edge.negative_prompt) == (
        "cartoon, anime, painting", "text, watermark", "")
    assert pds.score_model == "openai/clip-vit-large-patch14"
    assert (gitd.resolution, pds.resolution, edge.resolution) == (512, 768, 512)
    assert (gitd.num_inference_steps, pds.num_inference_steps) == (50, 100)
    assert (gitd.generate_batch_size, edge.generate_batch_size) == (2, 4)
