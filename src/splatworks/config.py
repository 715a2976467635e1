"""Typed configs: one dataclass per stage, whose field help becomes ``--help``.

Declare fields with :func:`option` so the help text lives next to the default::

    @dataclass
    class SfmConfig:
        max_image_size: int = option(1600, "Longest image side for feature extraction (pixels).")

``add_arguments(parser, SfmConfig)`` turns every field into ``--max-image-size``; ``from_args(SfmConfig, ns)``
builds the config back. Nested dataclass fields become prefixed options (``--strategy.grow-grad2d``).
Configs are saved as JSON next to every result (``to_json``) so a result always says how it was made.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: typing.Sequence[Any] | None = None,
           factory: typing.Callable[[], Any] | None = None, cli: bool = True) -> Any:
    """A dataclass field with help text (and optional choices) for the CLI."""
    meta = {"help": help, "choices": choices, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, str)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return tp, False


def _preset_values(presets: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """Value of field ``name`` in each preset that sets it (presets: name -> overrides dict or config)."""
    out: dict[str, Any] = {}
    for preset_name, p in (presets or {}).items():
        values = p if isinstance(p, dict) else dataclasses.asdict(p)
        if name in values:
            out[preset_name] = values[name]
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                  presets: dict[str, Any] | None = None, defaults: Any = None) -> None:
    """Add one option per field of dataclass ``cls`` (recursively for nested dataclasses).

    ``presets`` (name -> overrides dict or config instance) makes the help say where a preset differs from the
    plain default, so ``--help`` never shows a default that the chosen preset replaces. ``defaults``: the instance
    whose values the help shows (a nested config's parent may build it with other values than its class has).
    """
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp, optional = _unwrap_optional(_field_type(cls, f))
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None))  # type: ignore[misc]
        if dataclasses.is_dataclass(tp):
            add_arguments(parser, tp, prefix=f"{prefix}{f.name}.", defaults=default)
            continue
        help_text = f.metadata.get("help", "")
        shown = f"default: {default}"
        differing = {k: v for k, v in _preset_values(presets, f.name).items() if v != default}
        if differing:
            shown = "; ".join(f"preset {k}: {v}" for k, v in differing.items()) + f"; otherwise {default}"
        help_text = f"{help_text} ({shown})" if help_text else f"({shown})"
        kwargs: dict[str, Any] = {"dest": (prefix + f.name).replace(".", "__"), "default": argparse.SUPPRESS,
                                  "help": help_text.replace("%", "%%")}
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"])
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs["nargs"] = "*"
            kwargs["type"] = inner if inner in (int, float, str) else str
        elif tp in (int, float, str):
            kwargs["type"] = tp
        elif tp is Path:
            kwargs["type"] = Path
        else:
            kwargs["type"] = str
        if optional and tp in (int, float):
            base = tp
            kwargs["type"] = lambda s, base=base: None if s.lower() in ("none", "") else base(s)
        parser.add_argument(_flag(prefix, f.name), **kwargs)


def from_args(cls: type[T], ns: argparse.Namespace, base: T | None = None, prefix: str = "") -> T:
    """Build ``cls`` from parsed options; fields not given keep ``base``'s value (or the default)."""
    values = vars(ns)
    base = base if base is not None else cls()  # type: ignore[call-arg]
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp, _ = _unwrap_optional(_field_type(cls, f))
        if dataclasses.is_dataclass(tp):
            changes[f.name] = from_args(tp, ns, getattr(base, f.name), prefix=f"{prefix}{f.name}__")
            continue
        key = prefix + f.name
        if key in values:
            value = values[key]
            if typing.get_origin(tp) is tuple and value is not None:
                value = tuple(value)
            changes[f.name] = value
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(cfg).items()}


def to_json(cfg: Any, path: str | Path | None = None) -> str:
    """The config as JSON; also written to ``path`` when given."""
    text = json.dumps(to_dict(cfg), indent=2, sort_keys=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Inverse of ``to_dict`` (unknown keys are refused, so a typo in a saved config is caught)."""
    kwargs: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k, v in d.items():
        if k not in names:
            raise ValueError(f"{cls.__name__} has no setting {k!r}; known: {sorted(names)}")
        tp, _ = _unwrap_optional(_field_type(cls, names[k]))
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            v = from_dict(tp, v)
        elif typing.get_origin(tp) is tuple and v is not None:
            v = tuple(v)
        elif tp is Path and v is not None:
            v = Path(v)
        kwargs[k] = v
    return cls(**kwargs)  # type: ignore[call-arg]
