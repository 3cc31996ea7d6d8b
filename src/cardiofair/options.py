"""One declaration per option: a field of a stage's settings dataclass is its configuration key,
its command-line flag and its default, all at once.

A field declared with :func:`option` carries its help text, whether it names an input path, and
(where the values are few) the constant that lists them. From the dataclass alone,
:func:`add_options` builds a command's flags, :func:`from_args` reads them back,
:func:`from_mapping` builds the settings from a section of a study file, and :func:`command_line`
writes settings as the flags that reproduce them. Fields declared with a plain default are
internal knobs: neither flags nor keys.

Pure Python, so a study file is checked before numpy or torch is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import types
import typing
from typing import Any, Callable, Iterator, Mapping, Sequence

from cardiofair.errors import SettingsError

NONE_WORDS = ("", "none")


class Registry(Sequence[str]):
    """The names of a registry that lives in a module which imports numpy or torch (the arms
    with their training-set builders, the cohort loaders), read only when a value is checked or
    the help is shown: the names are declared once, beside what they name, and a study file
    that does not use them is still checked without numpy."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __bool__(self) -> bool:
        # A registry always names something; asking must not import it.
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __repr__(self) -> str:
        return f"Registry({self.module}.{self.name})"


def option(default: Any, help: str, *, choices: Sequence[str] | None = None, path: bool = False,
           flags: Sequence[str] = (), compare: bool = True) -> Any:
    """A settings field that is also a flag and a configuration key.

    ``choices`` (the constant the stage checks against) limits the values, element by element
    for a tuple; ``path`` marks an input file or folder (relative paths in a study file are
    relative to the file, and it must exist); ``flags`` replaces the flag spelled from the name.
    """
    if choices is not None and not isinstance(choices, Registry):
        choices = tuple(choices)
    return dataclasses.field(default=default, compare=compare, hash=None if compare else False,
                             metadata={"help": help, "choices": choices,
                                       "path": path, "flags": tuple(flags)})


def options(settings: Any) -> list[dataclasses.Field]:
    """The option fields of a settings class or instance, in declaration order."""
    return [f for f in dataclasses.fields(settings) if "help" in f.metadata]


def flag(field_name: str) -> str:
    """The long flag of an option: ``max_steps`` -> ``--max-steps``."""
    return "--" + field_name.replace("_", "-")


def option_types(cls: type) -> dict[str, Any]:
    """Each option's declared type, with ``X | None`` read as ``X`` plus whether None is allowed."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in options(cls)}


def _parts(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), type(None) in typing.get_args(kind)
    return kind, False


def check_choices(settings: Any) -> None:
    """Raise :class:`SettingsError` for an option value outside its declared choices."""
    for f in options(settings):
        allowed, value = f.metadata["choices"], getattr(settings, f.name)
        # A registry's default is one of its names (tests/test_settings.py checks each): checking
        # it would import the registry, and numpy with it, for every study file.
        if allowed is None or value is None or (isinstance(allowed, Registry) and value == f.default):
            continue
        bad = [v for v in (value if isinstance(value, tuple) else (value,)) if v not in allowed]
        if bad:
            shown = value if not isinstance(value, tuple) else bad[0]
            raise SettingsError(f.name, f"must be one of {list(allowed)}, got {shown!r}")


def plain(settings: Any) -> dict[str, Any]:
    """The option values as plain YAML/JSON values (tuples as lists)."""
    return {f.name: _plain(getattr(settings, f.name)) for f in options(settings)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --- the command line -------------------------------------------------------------------------


def _text_parser(kind: Any, choices: tuple[str, ...] | None) -> Callable[[str], Any]:
    """How a flag's text becomes a value of ``kind``."""
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]

        def one(part: str) -> Any:
            try:
                return item(part) if item in (int, float) else part
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} is not {type_name(item)}") from None

        def items(text: str) -> tuple[Any, ...]:
            values = () if text.strip().lower() in NONE_WORDS else \
                tuple(one(part.strip()) for part in text.split(",") if part.strip())
            bad = [v for v in values if choices and v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{bad[0]!r} is not one of {list(choices)}")
            return values
        return items
    if typing.get_origin(kind) is dict:
        def pairs(text: str) -> dict[str, str]:
            found = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                if "=" not in item:
                    raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
                key, value = item.split("=", 1)
                found[key.strip()] = value.strip()
            return found
        return pairs
    return kind


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per option of ``cls``, its help ending with the default (a None default is
    explained by the help itself)."""
    for f in options(cls):
        kind, _ = _parts(option_types(cls)[f.name])
        choices = f.metadata["choices"]
        scalar_choices = choices if typing.get_origin(kind) not in (tuple, dict) else None
        lazy = isinstance(choices, Registry)
        # argparse lists plain choices in the metavar when the flag is added; a registry's are
        # listed in the help, which argparse formats only when it is shown.
        # argparse formats help with %: a literal one ("95% interval") must be doubled.
        help_text = (f.metadata["help"].replace("%", "%%") + (": one of %(choices)s" if scalar_choices and lazy else "")
                     + ("" if f.default is None else f" (default {_default_text(f.default)})".replace("%", "%%")))
        names = f.metadata["flags"] or (flag(f.name),)
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
            continue
        parser.add_argument(*names, dest=f.name, type=_text_parser(kind, choices), default=f.default,
                            choices=scalar_choices, metavar=None if scalar_choices and not lazy else f.name.upper(),
                            help=help_text)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The settings a parsed command line chose; a bad value is named by its flag."""
    try:
        return cls(**{f.name: getattr(args, f.name) for f in options(cls)})
    except SettingsError as error:
        if error.key is None:
            raise
        named = next((f.metadata["flags"] or (flag(f.name),) for f in options(cls) if f.name == error.key),
                     (flag(error.key),))
        raise SettingsError(named[-1], error.problem) from None


def command_line(settings: Any) -> list[str]:
    """The flags that reproduce ``settings``: every option with a value; a switch as ``--x``
    or, where its default is not off, ``--no-x``."""
    argv: list[str] = []
    for f in options(settings):
        value = getattr(settings, f.name)
        name = (f.metadata["flags"] or (flag(f.name),))[-1]
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(name)
            elif f.default is not False:
                argv.append("--no-" + name[2:])
        elif isinstance(value, tuple):
            argv += [name, ",".join(map(str, value)) or "none"]
        elif isinstance(value, dict):
            argv += [name, ",".join(f"{k}={v}" for k, v in value.items())]
        else:
            argv += [name, str(value)]
    return argv


# --- study files -------------------------------------------------------------------------------


def type_name(kind: Any) -> str:
    """How a message names a type: ``an integer or null``."""
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    base, optional = _parts(kind)
    if optional:
        return f"{type_name(base)} or null"
    if typing.get_origin(base) is tuple:
        return f"a list of {type_name(typing.get_args(base)[0]).replace('an ', '').replace('a ', '')}s"
    if typing.get_origin(base) is dict:
        return "a mapping of strings"
    return names.get(base, getattr(base, "__name__", str(base)))


def coerce(value: Any, kind: Any, key: str) -> Any:
    """A YAML value as ``kind``, or a :class:`SettingsError` naming ``key`` and the type wanted."""
    base, optional = _parts(kind)
    if value is None and optional:
        return None
    if typing.get_origin(base) is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            item = typing.get_args(base)[0]
            return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    elif typing.get_origin(base) is dict:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise SettingsError(key, f"must be {type_name(kind)}, got {value!r}")


def from_mapping(cls: type, values: Any, section: str) -> Any:
    """Settings from one section of a study file; an unknown key, a wrong type or a value out of
    range is a :class:`SettingsError` that names ``section.key``."""
    if not isinstance(values, Mapping):
        raise SettingsError(None, f"{section} must be a mapping of keys, got {values!r}")
    kinds = option_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in kinds:
            close = difflib.get_close_matches(str(key), kinds, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else f"; known keys: {', '.join(kinds)}"
            raise SettingsError(None, f"unknown key '{section}.{key}'{hint}")
        kwargs[key] = coerce(value, kinds[key], f"{section}.{key}")
    try:
        return cls(**kwargs)
    except SettingsError as error:
        if error.key is None:
            raise SettingsError(None, f"{section}: {error.problem}") from None
        raise SettingsError(f"{section}.{error.key}", error.problem) from None


def input_paths(settings: Any) -> dict[str, str]:
    """The path options that are set: name -> value as written."""
    return {f.name: getattr(settings, f.name) for f in options(settings)
            if f.metadata["path"] and getattr(settings, f.name)}
