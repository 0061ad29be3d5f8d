"""A training recipe kept in a file (JSON or YAML): its settings become the script's defaults.

The file is one mapping whose keys are the script's option names, ``batch_size`` or ``batch-size``::

    # recipe.yaml
    epochs: 300
    optimizer: adamw
    weight-decay: 0.05
    mixup: 0.8
    cutmix: 1.0
    ema: 0.9998

``apply_config`` makes the file's values the parser's defaults, each converted and checked by the parser's own
``type=`` and ``choices``, then parses the command line, so an option given there wins over the file. YAML is
read with YAML 1.2's booleans (only true/false), so ``amp: off`` is the string "off". Problems (a missing or
unparsable file, an unknown key, a value of the wrong kind) raise ``ConfigError`` naming the file and the key.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["load_config_file", "apply_config"]


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: yes/no/on/off stay strings."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_config_file(path: str) -> dict[str, Any]:
    """The settings in a JSON (``.json``) or YAML file, keys spelled as option names with ``_`` for ``-``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(f"cannot read the config file {path}: {err.strerror or err}") from err
    try:
        data = json.loads(text) if path.lower().endswith(".json") else yaml.load(text, Loader=_Yaml12Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)  # YAML's position, JSON's is in its message
        why = f"{err.problem}, line {mark.line + 1} column {mark.column + 1}" if mark else " ".join(str(err).split())
        raise ConfigError(f"the config file {path} does not parse: {why}") from err
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {path} must hold one mapping of settings, not a {type(data).__name__}")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in settings:
            raise ConfigError(f"the config file {path} sets {name!r} twice ({name!r} and {name.replace('_', '-')!r})")
        settings[name] = value
    return settings


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` from a config file as the parsed value of ``action``, or ``ConfigError`` saying why not."""
    if value is None and action.default is None:
        return None
    if action.nargs == 0:  # an on/off switch: store_true, store_false, BooleanOptionalAction
        if isinstance(value, bool) and (isinstance(action.const, bool) or
                                        isinstance(action, argparse.BooleanOptionalAction)):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_convert_one(action, item, where) for item in value]
    return _convert_one(action, value, where)


def _convert_one(action: argparse.Action, value: Any, where: str) -> Any:
    """One scalar through the action's ``type=`` (as if typed on the command line) and ``choices``."""
    if isinstance(value, (bool, list, dict)) or value is None:  # bool: int(True) would pass as 1
        raise ConfigError(f"{where} cannot be {value!r}")
    kind = action.type or str
    try:
        converted = kind(str(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
        expected = {int: "an integer", float: "a number"}.get(kind, f"a valid {getattr(kind, '__name__', 'value')}")
        raise ConfigError(f"{where} must be {expected}, got {value!r}") from err
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return converted


def apply_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                 dest: str = "config") -> argparse.Namespace:
    """Parse ``argv`` with ``parser``, its defaults first replaced by the settings of the file named by the
    option ``dest`` (``--config FILE``), if given; options on the command line win. Changes ``parser``'s
    defaults. ``ConfigError`` for the file's problems (see the module docstring)."""
    path = getattr(parser.parse_args(argv), dest)
    if not path:
        return parser.parse_args(argv)
    # argparse has no public list of its options; _actions is stable across Python 3 versions.
    actions = {action.dest: action for action in parser._actions
               if action.option_strings and action.default is not argparse.SUPPRESS and action.dest != dest}
    defaults = {}
    for name, value in load_config_file(path).items():
        if name not in actions:
            close = difflib.get_close_matches(name, actions, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"the config file {path} has an unknown key {name!r}{hint}")
        defaults[name] = _convert(actions[name], value, f"{name!r} in the config file {path}")
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)
