"""Settings of a ``gitd distill`` run from presets, config files (YAML or JSON) and flags.

Each method owns its settings class and presets (``gitd.registry``); this module only combines
the sources. Precedence, lowest first: the method's field defaults < preset < config file <
explicit CLI flags. A config file is flat (``method: pds``, ``preset: fast``,
``num_candidates: 4``); a ``--preset`` flag given on the command line beats the file's. Field
names are the CLI names with ``-`` for ``_`` (``num_candidates`` is ``--num-candidates``).

Constructors only store values; ``settings.validate()`` (called where work starts) checks them
and raises a one-line ``ConfigError`` naming the field and the bad value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitd.errors import ConfigError
from gitd.log import get_logger
from gitd.registry import MethodSettings, get_method, list_methods
from gitd.settings import field_names

log = get_logger("config")

DEFAULT_METHOD = "gitd"


def distill_fields() -> dict[str, list[str]]:
    """Every settings field of every distillation method -> the methods that have it."""
    out: dict[str, list[str]] = {}
    for name in list_methods("distill"):
        for f in field_names(get_method(name).Settings):
            out.setdefault(f, []).append(name)
    return out


def _check_known(data: dict[str, Any], source: str) -> None:
    known = distill_fields()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known settings: "
                          f"{', '.join(known)}")


# -- files ---------------------------------------------------------------------------------------
def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML or JSON config file (keys checked, values not yet)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        if _is_yaml(path):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types; both mean a bad file
        msg = str(exc).replace("\n", " ")
        raise ConfigError(f"{path}: not valid {'YAML' if _is_yaml(path) else 'JSON'} ({msg})") \
            from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    _check_known(data, str(path))
    return data


def make_config(preset: str | None = None, config_file: str | Path | None = None,
                **overrides: Any) -> MethodSettings:
    """The settings object of the method named by ``overrides``, else the file, else gitd:
    defaults < ``preset`` (else the file's, else the method's default) < file < ``overrides``.

    Pass in ``overrides`` only the settings the user actually gave. A file key that belongs to
    another method is ignored with a warning (files written before the methods had their own
    settings carry every method's fields); such an override is an error.
    """
    data: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    _check_known(overrides, "override")
    method = overrides.pop("method", None) or data.pop("method", None) or DEFAULT_METHOD
    data.pop("method", None)
    cls = get_method(method)
    own = set(field_names(cls.Settings))
    foreign = sorted(set(overrides) - own)
    if foreign:
        owners = distill_fields()
        raise ConfigError(f"{', '.join(foreign)}: not a setting of method {method} (only of "
                          f"{', '.join(sorted({m for k in foreign for m in owners[k]}))})")
    ignored = sorted(set(data) - own)
    if ignored:
        log.warning("%s: ignoring setting(s) of other methods: %s", config_file,
                    ", ".join(ignored))
    file_preset = data.pop("preset", None)
    values = {k: v for k, v in data.items() if k in own}
    return cls.configure(preset or file_preset, **{**values, **overrides})


def load_config(path: str | Path, **overrides: Any) -> MethodSettings:
    """Settings from a file (its ``preset`` then its fields), then ``overrides`` on top."""
    return make_config(config_file=path, **overrides)


def save_config(settings: MethodSettings, path: str | Path) -> None:
    """Write every field (YAML for .yaml/.yml, JSON otherwise), atomically."""
    from gitd.store import atomic_write_text

    path = Path(path)
    if _is_yaml(path):
        import yaml

        text = yaml.safe_dump(settings.to_dict(), sort_keys=False)
    else:
        text = json.dumps(settings.to_dict(), indent=2) + "\n"
    atomic_write_text(path, text)
