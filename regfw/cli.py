"""The command line around `train.py`: checks before Hydra runs, and the task Hydra calls.

User mistakes end with one line on stderr (`regfw: error: <key>=<value>: <what is allowed>`) and
exit code 2, without a traceback. Nothing here imports TensorFlow until a run actually trains.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from regfw.build.selection import SelectionError
from regfw.config.compose import GROUPS, compose, group_options
from regfw.config.schema import ConfigError, validate
from regfw.registry import UnknownNameError, did_you_mean
from regfw.sweeps import callback as sweep

USER_ERRORS = (ConfigError, UnknownNameError, SelectionError)
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3


def fail(message: str) -> NoReturn:
    """Prints `regfw: error: <message>` to stderr and exits with code 2."""
    print(f"regfw: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run(cfg: DictConfig) -> float:
    """The Hydra task: validates `cfg`, trains, and returns the objective (`trainer.monitor`).

    A diverged single run exits with code 3 after writing its metrics. In a multirun, a job that
    fails or diverges is recorded in its `metrics.json` and the sweep goes on
    (`regfw.sweeps.callback`); the multirun's exit code says whether every job completed.
    """
    if sweep.in_multirun():
        return sweep.run_recorded(cfg, lambda: _objective(_train(cfg)), USER_ERRORS)
    try:
        metrics = _train(cfg)
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(error))
    if metrics["status"] == "diverged":
        print(f"regfw: error: training diverged: {metrics['error']}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    return _objective(metrics)


def _train(cfg: DictConfig) -> dict[str, Any]:
    validate(cfg)
    import_tensorflow_quietly()
    from regfw.training.trainer import train

    return train(cfg)


def _objective(metrics: dict[str, Any]) -> float:
    value = metrics["objective"]["value"]
    return math.nan if value is None else value


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and initializes its devices with native stderr silenced.

    TensorFlow's C++ start-up notices (oneDNN, CUDA probing) would otherwise surround regfw's
    one-line messages. `HYDRA_FULL_ERROR=1` keeps them, for debugging.
    """
    if "tensorflow" in sys.modules or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Checks `train.py`'s overrides before Hydra runs them; exits with a clear message if wrong.

    Every value of every sweep is checked (each against the first values of the other overrides),
    so a multirun with a bad value fails before its first job starts.
    """
    problem = find_problem(list(sys.argv[1:] if argv is None else argv))
    if problem:
        fail(problem)


def find_problem(argv: list[str]) -> str | None:
    """Returns a one-line description of what is wrong with the command line, or None."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_path:
        return None
    if args.config_dir:
        return None
    if not args.overrides:
        return None  # the defaults themselves are checked by the test suite
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException:
        return None  # Hydra reports syntax errors itself.
    ours = [o for o in overrides if not o.key_or_group.startswith("hydra")]
    choices = [_values(o) for o in ours]
    for override, values in zip(ours, choices, strict=True):
        group = override.key_or_group
        if group in GROUPS and not override.is_delete():
            for value in values:
                problem = _check_option(group, override.get_key_element(), value)
                if problem:
                    return problem
    for variant in _variants(ours, choices):
        try:
            cfg = compose(variant, config_name=args.config_name or "config")
        except Exception:
            return _diagnose_keys(ours, choices, args.config_name or "config")
        try:
            validate(cfg)
        except ConfigError as error:
            return str(error)
    return None


def _values(override: Any) -> list[str]:
    """The value strings of an override: one, or each value of a sweep."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    try:
        return list(override.sweep_string_iterator())
    except Exception:
        return []


def _variants(overrides: list[Any], choices: list[list[str]]) -> list[list[str]]:
    """First value of every override, then one variant per other sweep value."""
    kept = [(o.get_key_element(), v) for o, v in zip(overrides, choices, strict=True) if v]
    lines = [f"{key}={values[0]}" for key, values in kept]
    variants = [lines]
    for i, (key, values) in enumerate(kept):
        variants += [[*lines[:i], f"{key}={value}", *lines[i + 1 :]] for value in values[1:]]
    return variants


def _check_option(group: str, key: str, value: str) -> str | None:
    options = group_options(group)
    if value in options or value == "null":
        return None
    return (
        f"{key}={value}: no such option in group '{group}'.{did_you_mean(value, options)} "
        f"Available: {', '.join(options)}"
    )


def _diagnose_keys(overrides: list[Any], choices: list[list[str]], config_name: str) -> str | None:
    """Finds an override of a key that does not exist, and names the closest existing key.

    The config is composed with the group choices only (overrides without a dot), so the keys
    every group provides are known.
    """
    group_lines = [
        f"{o.get_key_element()}={v[0]}"
        for o, v in zip(overrides, choices, strict=True)
        if v and "." not in o.key_or_group
    ]
    try:
        cfg = compose(group_lines, config_name=config_name)
    except Exception:
        return None
    for override in overrides:
        if override.is_add() or override.is_force_add() or override.is_delete():
            continue
        node: Any = cfg
        parts = override.key_or_group.split(".")
        for depth, part in enumerate(parts):
            if not OmegaConf.is_dict(node) or part not in node:
                parent = ".".join(parts[:depth])
                keys = (
                    [f"{parent}.{k}" if parent else k for k in node]
                    if OmegaConf.is_dict(node)
                    else []
                )
                hint = did_you_mean(override.key_or_group, keys)
                return (
                    f"{override.key_or_group}: no such config key.{hint} "
                    f"Keys here: {', '.join(keys)} (use +{override.key_or_group}=... to add one)"
                )
            node = node[part]
    return None
