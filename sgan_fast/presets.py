"""Config files and the presets shipped with sgan_fast (`--config NAME_OR_FILE`).

A config is a YAML mapping of TrainConfig settings, with an optional `data:` mapping of the
data flags (`data`, `root`, `imbalance`, `num_samples`, ...; dashes or underscores):

    resolution: 32
    batch_size: 50
    data: {data: cifar10, imbalance: reference, num_samples: 5000}

The presets are the files in sgan_fast/configs (`configs/` in the repository), named by
their file name without .yaml: `--config cr-biggan-cifar10-0.1`. docs/reproduce.md maps each
to the reference script it stands for.

The data section becomes the defaults of the command's data flags before the command line
is parsed, so a flag given on the command line wins, and `--data` may be left out when the
config names it. `train` reads both parts; `classify`, `prepare` and `eval` read the data part
only, so that one preset makes the bank, trains and evaluates on the same data.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DATA_KEY = "data"
COMMANDS_WITH_CONFIG = ("train", "classify", "prepare", "eval")


def list_presets() -> list[str]:
    """The names of the shipped presets, sorted."""
    if not os.path.isdir(PRESET_DIR):
        return []
    return sorted(f[:-len(".yaml")] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))


def resolve_config(name: str) -> str:
    """The file of --config `name`: the path itself when it exists, else the preset of that
    name; FileNotFoundError listing the presets otherwise."""
    if os.path.isfile(name):
        return name
    preset = os.path.join(PRESET_DIR, f"{name}.yaml")
    if os.sep not in name and "/" not in name and os.path.isfile(preset):
        return preset
    raise FileNotFoundError(f"--config {name}: no such file, and no preset of that name "
                            f"(presets: {', '.join(list_presets()) or 'none installed'})")


def read_config(path: str) -> dict:
    """The YAML mapping of a config file, keys with underscores; ValueError naming the file
    when it is not a mapping."""
    import yaml
    with open(path, encoding="utf-8") as f:
        try:
            d = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config file must be a mapping of settings, got "
                         f"{type(d).__name__}")
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def data_settings(path: str, parser: argparse.ArgumentParser) -> dict:
    """The data section of the config file `path`, checked against the data flags of
    `parser` (a command's parser): {dest: value} in each flag's type."""
    section = read_config(path).get(DATA_KEY)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: `data` must be a mapping of data flags (data: cifar10, "
                         f"imbalance: reference, ...), got {section!r}")
    actions = _data_actions(parser)
    out = {}
    for key, value in section.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ValueError(f"{path}: data: unknown setting {key!r}; known: "
                             f"{', '.join(sorted(actions))}")
        out[dest] = _typed(actions[dest], value, f"{path}: data: {key}")
    return out


def _data_actions(parser: argparse.ArgumentParser) -> dict:
    groups = [g for g in parser._action_groups if g.title == "data"]
    if not groups:
        raise ValueError("this command takes no data flags")
    return {a.dest: a for a in groups[0]._group_actions}


def _typed(action: argparse.Action, value, what: str):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{what} must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    try:
        if action.type is not None:
            value = action.type(value) if isinstance(value, str) or action.type in (int, float) \
                else value
            if action.type is int and isinstance(value, float):
                raise ValueError
        elif not isinstance(value, str):
            raise ValueError
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"{what}: {value!r} is not a valid value") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{what} must be one of {', '.join(map(str, action.choices))}, got "
                         f"{value!r}")
    return value


def apply_config_data(commands: dict, argv: Optional[list]) -> None:
    """Before the command line is parsed: the data section of its --config (when the
    command is one of COMMANDS_WITH_CONFIG) as the defaults of the command's data flags.
    `commands`: the subparsers by name."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS_WITH_CONFIG:
        return
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv[1:])
    if known.config is None:
        return
    parser = commands[argv[0]]
    settings = data_settings(resolve_config(known.config), parser)
    if not settings:
        return
    parser.set_defaults(**settings)
    if "data" in settings:
        parser._option_string_actions["--data"].required = False
