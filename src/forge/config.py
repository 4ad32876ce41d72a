"""YAML + command-line overrides → a tree of frozen dataclasses (issue 7, item 1).

The YAML tree maps 1:1 onto the dataclass tree: a mapping becomes a nested dataclass, a key becomes a field.
Defaults live on the dataclass fields (never at call sites). Loading is strict:

* an unknown key is rejected and the closest valid key is suggested (``difflib``): "did you mean 'trainer.procs'";
* a value of the wrong type names the key path, the value and the expected type;
* a required field (no default) that is missing is reported with its type.

All problems found in one load are reported together in one :class:`ConfigError`.

A section given only in part is completed from the field's default *instance* (what the parent dataclass would
build), not from the nested class's own defaults: with ``eval: EvalSettings = field(default_factory=lambda:
EvalSettings(dataset=DatasetConfig(split="test")))``, the override ``eval.dataset.max_samples=100`` keeps
``split="test"``.

Supported field types: ``int``, ``float`` (YAML 1.1 reads ``1e-6`` as a string; it is accepted as a float),
``bool``, ``str``, ``pathlib.Path``, ``Optional[X]`` / ``X | None``, other unions (tried in order),
``Literal[...]``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]``, ``Any`` and nested dataclasses.

Immutability: the dataclasses should be ``frozen=True``; sequences are stored as tuples and mappings as
:class:`FrozenDict` (a picklable read-only ``dict``) so that nothing in a loaded config can be mutated.
Derived values belong in ``@property`` methods of the config classes.

Command-line overrides (:func:`parse_cli` / ``overrides=``) accept ``--trainer.procs 4``, ``--trainer.procs=4`` and
``trainer.procs=4``. Override values are read as YAML (``[1, 2]``, ``null``, ``true``) except for ``str`` fields,
which take the text verbatim; ``list``/``tuple`` fields also accept ``1,2,3``. A key below a ``dict`` field sets an
entry of that dict (``--generator.engine_args.max_model_len=256``).

    cfg = forge.config.parse_cli(GRPOConfig)            # --config path.yaml + overrides from sys.argv
    cfg = forge.config.load(GRPOConfig, "apps/grpo/demo.yaml", ["trainer.procs=2"])
    forge.config.save(cfg, run_dir / "config.yaml")     # what the run used, reloadable with load()
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import pathlib
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = ["ConfigError", "FrozenDict", "from_dict", "load", "parse_cli", "save", "to_dict", "to_yaml"]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config could not be loaded; the message lists every problem found (one per line)."""


class FrozenDict(dict):
    """A read-only ``dict`` (picklable, unlike ``types.MappingProxyType``), used for mapping-typed config fields."""

    def _readonly(self, *args, **kwargs):
        raise TypeError("config mappings are immutable; use dataclasses.replace or overrides at load time")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly  # type: ignore

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __hash__(self):  # so a config holding a FrozenDict stays hashable like any frozen dataclass
        return hash(tuple(sorted(self.items(), key=repr)))


class _CliText(str):
    """An override value exactly as typed on the command line (parsed against the target field's type)."""


# ---------------------------------------------------------------------------------------------------------------
# public API


def load(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
) -> T:
    """Build a ``cls`` instance from a YAML file and/or a dict, then apply ``key=value`` overrides.

    ``path`` and ``data`` may be combined (``data`` is merged over the file, recursively); both may be omitted to
    start from the dataclass defaults. ``overrides`` items are ``"a.b=value"`` or ``"--a.b=value"``.
    Raises :class:`ConfigError` listing every unknown key, wrong type and missing field.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"forge.config.load needs a dataclass type, got {cls!r}")
    tree: dict[str, Any] = {}
    if path is not None:
        tree = _read_yaml(path)
    if data is not None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"data must be a mapping of config keys, got {type(data).__name__}")
        tree = _deep_merge(tree, data)
    errors: list[str] = []
    for item in overrides:
        key, value = _split_override(item)
        _apply_override(cls, tree, key, value, errors)
    if errors:
        raise ConfigError(_format_errors(cls, errors))
    return from_dict(cls, tree)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a ``cls`` instance from a (nested) mapping, with the same checks as :func:`load`."""
    errors: list[str] = []
    out = _build_dataclass(cls, data, "", errors)
    if errors:
        raise ConfigError(_format_errors(cls, errors))
    return out


def parse_cli(cls: type[T], argv: Sequence[str] | None = None, default_config: str | None = None) -> T:
    """Parse an app's command line: ``--config path.yaml`` plus overrides in any of the accepted forms.

    ``argv`` defaults to ``sys.argv[1:]``. ``-h``/``--help`` prints every key with its type and default, then
    exits. ``default_config`` is used when no ``--config`` is given.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(help_text(cls))
        raise SystemExit(0)
    config_path, overrides = default_config, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a path: --config path/to/config.yaml")
            config_path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            config_path, i = arg.split("=", 1)[1], i + 1
            continue
        if arg.startswith("--") and "=" not in arg:
            if i + 1 >= len(argv) or (argv[i + 1].startswith("--") and not _looks_negative_number(argv[i + 1])):
                raise ConfigError(f"override {arg} has no value: write {arg} VALUE or {arg}=VALUE")
            overrides.append(f"{arg[2:]}={argv[i + 1]}")
            i += 2
            continue
        if "=" in arg:
            overrides.append(arg.removeprefix("--"))
            i += 1
            continue
        raise ConfigError(f"cannot parse argument {arg!r}: expected --config PATH, --key VALUE, --key=VALUE or key=VALUE")
    return load(cls, config_path, overrides)


def to_dict(cfg: Any) -> Any:
    """A plain-Python view of a config (dicts, lists, scalars; paths as strings) that :func:`load` reads back."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, pathlib.PurePath):
        return str(cfg)
    return cfg


def to_yaml(cfg: Any) -> str:
    """The config as YAML text (keys in field order)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def save(cfg: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write the config as YAML to ``path`` (parents created); returns the path. ``load(type(cfg), path)`` reloads it."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(cfg))
    return out


def help_text(cls: type, prefix: str = "") -> str:
    """One line per leaf key: ``key: type = default``, nested dataclasses expanded."""
    lines = []
    hints = _hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        sub = _dataclass_in(tp)
        if sub is not None:
            lines.append(help_text(sub, key + "."))
            continue
        default = _field_default(f)
        shown = "(required)" if default is _MISSING else f"= {default!r}"
        comment = comments.get(f.name)
        lines.append(f"  --{key}: {_type_name(tp)} {shown}" + (f"  # {comment}" if comment else ""))
    return "\n".join(lines)


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field's line in the class source (the house style's field docs)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # classes built at run time have no source
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE):
            out[m.group(1)] = m.group(2).strip()
    return out


# ---------------------------------------------------------------------------------------------------------------
# reading and overriding


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        tree = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level, got {type(tree).__name__}")
    return tree


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _looks_negative_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _split_override(item: str) -> tuple[str, str]:
    text = item.removeprefix("--")
    if "=" not in text:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, value = text.split("=", 1)
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key.strip(), value


def _apply_override(cls: type, tree: dict[str, Any], key: str, value: str, errors: list[str]) -> None:
    """Set ``tree[a][b]... = value`` after checking that ``a.b...`` names a field of ``cls`` (or a dict entry)."""
    parts = key.split(".")
    node, tp = tree, cls
    for depth, name in enumerate(parts):
        path = ".".join(parts[: depth + 1])
        dc = _dataclass_in(tp)
        if dc is not None:
            hints = _hints(dc)
            if name not in hints:
                errors.append(_unknown_key_message(path, name, list(hints), ".".join(parts[:depth])))
                return
            field_tp = hints[name]
        elif _is_mapping_type(tp):
            args = typing.get_args(_strip_optional(tp))
            field_tp = args[1] if len(args) == 2 else Any
        elif tp is Any:
            field_tp = Any
        else:
            parent = ".".join(parts[:depth])
            errors.append(f"{path}: {parent!r} is a {_type_name(tp)} value, it has no sub-keys")
            return
        if depth == len(parts) - 1:
            node[name] = _CliText(value)
            return
        child = node.get(name)
        if not isinstance(child, dict):  # absent or None (e.g. an Optional section): start an empty one
            child = dict(child) if isinstance(child, Mapping) else {}
            node[name] = child
        node, tp = child, field_tp


# ---------------------------------------------------------------------------------------------------------------
# building and type checking


def _hints(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # an annotation that does not resolve is a bug in the config class, say which
        raise TypeError(f"cannot resolve the field annotations of {cls.__qualname__}: {e}") from e
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING


def _build_dataclass(cls: type, data: Any, path: str, errors: list[str], base: Any = None) -> Any:
    """``cls`` from mapping ``data``; keys it lacks come from ``base`` (the field's default instance) when given,
    so ``eval.dataset.max_samples=9`` keeps the other values of ``eval``'s default dataset, not the class's."""
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        errors.append(f"{path or '<root>'}: expected a mapping for {cls.__qualname__}, got {_show(data)}")
        return None
    hints = _hints(cls)
    for key in data:
        if key not in hints:
            errors.append(_unknown_key_message(_join(path, str(key)), str(key), list(hints), path))
    n_before = len(errors)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        sub = _join(path, f.name)
        default = getattr(base, f.name) if isinstance(base, cls) else _field_default(f)
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], sub, errors, base=default)
        elif default is _MISSING:
            errors.append(f"{sub}: missing required key (expected {_type_name(hints[f.name])})")
        else:
            kwargs[f.name] = _coerce_default(default, hints[f.name], sub, errors)
    if len(errors) > n_before or any(k not in hints for k in data):
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ validation of the config class
        errors.append(f"{path or '<root>'}: {cls.__qualname__} rejected the values: {e}")
        return None


def _coerce_default(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Defaults are trusted, but lists/dicts in them are frozen like loaded values."""
    if isinstance(value, (list, dict)) and not isinstance(value, FrozenDict):
        return _coerce(value, tp, path, errors)
    return value


def _coerce(value: Any, tp: Any, path: str, errors: list[str], base: Any = None) -> Any:
    """Check ``value`` against ``tp`` and convert it (CLI text, ``1e-6`` strings, lists → tuples...).
    ``base``: the default being replaced (a nested dataclass section fills missing keys from it)."""
    if tp is Any or tp is object:
        return _freeze(_parse_cli_value(value))
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return _coerce_union(value, args, tp, path, errors, base)
    if origin is Literal:
        return _coerce_literal(value, args, path, errors)
    if dataclasses.is_dataclass(tp):
        raw = _parse_cli_value(value) if isinstance(value, _CliText) else value
        return _build_dataclass(tp, raw, path, errors, base)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        return _coerce_sequence(value, tp, origin, args, path, errors)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return _coerce_mapping(value, args, path, errors)
    if tp is bool:
        return _coerce_bool(value, path, errors)
    if tp is int:
        return _coerce_int(value, path, errors)
    if tp is float:
        return _coerce_float(value, path, errors)
    if tp is str:
        if isinstance(value, str):
            return str(value)
        return _type_error(path, value, tp, errors)
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        if isinstance(value, (str, pathlib.PurePath)):
            return tp(value)
        return _type_error(path, value, tp, errors)
    if tp is type(None):
        if value is None or (isinstance(value, _CliText) and _parse_cli_value(value) is None):
            return None
        return _type_error(path, value, tp, errors)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return _type_error(path, value, tp, errors)
    return value  # an annotation forge does not check (e.g. a Protocol): passed through as given


def _coerce_union(value: Any, args: tuple, tp: Any, path: str, errors: list[str], base: Any = None) -> Any:
    non_none = [a for a in args if a is not type(None)]
    if type(None) in args:
        raw = _parse_cli_value(value) if isinstance(value, _CliText) else value
        if raw is None or (isinstance(value, _CliText) and str(value).strip().lower() in ("none", "null", "~")):
            return None
    for arg in non_none:
        trial: list[str] = []
        out = _coerce(value, arg, path, trial, base)
        if not trial:
            return out
    if len(non_none) == 1:  # Optional[X]: report X's own message (more specific)
        return _coerce(value, non_none[0], path, errors, base)
    return _type_error(path, value, tp, errors)


def _coerce_literal(value: Any, choices: tuple, path: str, errors: list[str]) -> Any:
    raw = value
    if isinstance(value, _CliText):
        raw = str(value) if str(value) in choices else _parse_cli_value(value)
    for c in choices:
        if raw == c and type(raw) is type(c):
            return c
    msg = f"{path}: got {_show(value)}; expected one of {list(choices)}"
    near = difflib.get_close_matches(str(raw), [str(c) for c in choices], n=1)
    errors.append(msg + (f" (did you mean {near[0]!r}?)" if near else ""))
    return None


def _coerce_sequence(value, tp, origin, args, path, errors):
    if isinstance(value, _CliText):
        parsed = _parse_cli_value(value)
        if not isinstance(parsed, list):
            parsed = [] if not str(value).strip() else [_CliText(s.strip()) for s in str(value).split(",")]
        else:
            parsed = [_CliText(x) if isinstance(x, str) else x for x in parsed]
        value = parsed
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        return _type_error(path, value, tp, errors)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            errors.append(f"{path}: got {_show(value)} with {len(value)} items; expected {_type_name(tp)}")
            return None
        return tuple(_coerce(v, a, f"{path}[{i}]", errors) for i, (v, a) in enumerate(zip(value, args)))
    item_tp = args[0] if args else Any
    return tuple(_coerce(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value))


def _coerce_mapping(value, args, path, errors):
    if isinstance(value, _CliText):
        value = _parse_cli_value(value)
    if not isinstance(value, Mapping):
        return _type_error(path, value, dict, errors)
    key_tp, val_tp = args if len(args) == 2 else (Any, Any)
    return FrozenDict(
        {_coerce(k, key_tp, f"{path}.<key>", errors): _coerce(v, val_tp, _join(path, str(k)), errors) for k, v in value.items()}
    )


def _coerce_bool(value, path, errors):
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
    return _type_error(path, value, bool, errors)


def _coerce_int(value, path, errors):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
    return _type_error(path, value, int, errors)


def _coerce_float(value, path, errors):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            return float(value.strip())
        except ValueError:
            pass
    return _type_error(path, value, float, errors)


def _parse_cli_value(value: Any) -> Any:
    if not isinstance(value, _CliText):
        return value
    try:
        return yaml.safe_load(str(value))
    except yaml.YAMLError:
        return str(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# messages


def _type_error(path: str, value: Any, tp: Any, errors: list[str]) -> None:
    errors.append(f"{path}: got {_show(value)}; expected {_type_name(tp)}")


def _show(value: Any) -> str:
    if isinstance(value, _CliText):
        return f"{str(value)!r} (from the command line)"
    return f"{value!r} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    return getattr(tp, "__qualname__", str(tp))


def _unknown_key_message(full: str, name: str, valid: list[str], parent: str) -> str:
    near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    where = f"under {parent!r}" if parent else "at the top level"
    msg = f"{full}: unknown key {name!r} {where}"
    if near:
        msg += f"; did you mean {_join(parent, near[0])!r}?"
    return msg + f" (valid keys: {', '.join(valid)})"


def _format_errors(cls: type, errors: list[str]) -> str:
    head = f"invalid {cls.__qualname__} config ({len(errors)} problem{'s' if len(errors) > 1 else ''}):"
    return "\n  ".join([head, *errors])


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return tp


def _dataclass_in(tp: Any) -> type | None:
    tp = _strip_optional(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _is_mapping_type(tp: Any) -> bool:
    tp = _strip_optional(tp)
    return tp in (dict, Mapping) or typing.get_origin(tp) in (dict, Mapping)
