"""The command line around `train.py`: checks before Hydra runs, and the task Hydra calls.

Every failure ends with one line on stderr, `regfw: error: <key>=<value>: <what is allowed>`, and
the exit code of `regfw.errors` (2 for the user's mistakes), without a traceback unless
`HYDRA_FULL_ERROR=1`. Nothing here imports TensorFlow until a run actually trains.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf, open_dict

from regfw.config import backend
from regfw.config.compose import GROUPS, compose
from regfw.config.schema import validate
from regfw.errors import (
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_USER_ERROR,
    RegfwError,
    RunFolderError,
    UserError,
    full_error,
)
from regfw.registry import did_you_mean
from regfw.runs import folder
from regfw.sweeps import callback as sweep

# Folders the command-line check found missing: Hydra creates them before the task starts, and a
# rejected run removes them again if they are still empty.
_NEW_FOLDERS: dict[str, tuple[Path, ...]] = {}


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Prints `regfw: error: <message>` (one line) to stderr and exits with `code`."""
    print(f"regfw: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def reported(action: Callable[[], Any]) -> Any:
    """Runs `action`; a failure ends the process with one line and its exit code.

    regfw's own errors keep their exit codes (`regfw.errors`); anything else is a bug, reported
    in one line with exit code 1. With `HYDRA_FULL_ERROR=1` errors propagate with tracebacks.
    """
    try:
        return action()
    except RegfwError as error:
        if full_error():
            raise
        fail(str(error), error.exit_code)
    except Exception as error:
        if full_error():
            raise
        fail(
            f"internal error: {type(error).__name__}: {error} (HYDRA_FULL_ERROR=1 shows the "
            "traceback)",
            EXIT_FAILED,
        )


def run(cfg: DictConfig) -> float:
    """The Hydra task: checks `cfg` and the run folder, trains, and returns the objective.

    A diverged single run exits with code 3 after writing its metrics. In a multirun, a job that
    fails or diverges is recorded in its `metrics.json` and the sweep goes on
    (`regfw.sweeps.callback`); the multirun's exit code says whether every job completed.
    """
    if sweep.in_multirun():
        return sweep.run_recorded(cfg, lambda: _objective(_train(cfg)))
    metrics = reported(lambda: _train(cfg))
    if metrics["status"] == "diverged":
        fail(f"training diverged: {metrics['error']}", EXIT_DIVERGED)
    return _objective(metrics)


def _train(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    validate(cfg)
    backend.use(cfg.trainer)  # before Keras is imported
    if not HydraConfig.initialized():  # called from Python: the API's default folder
        import_backend_quietly()
        from regfw.training.trainer import train

        return train(cfg)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if sweep.in_multirun():
        where = f"hydra.sweep.dir={hydra_cfg.sweep.dir} (job {hydra_cfg.job.num})"
    else:
        where = f"hydra.run.dir={hydra_cfg.run.dir}"
        if not str(hydra_cfg.run.dir).strip():
            folder.check_location("", "hydra.run.dir")
    import_backend_quietly()
    from regfw.training.trainer import train

    new_folders = _NEW_FOLDERS.get(os.path.abspath(run_dir), ())
    return train(cfg, run_dir, where=where, new_folders=new_folders)


def _objective(metrics: dict[str, Any]) -> float:
    value = metrics["objective"]["value"]
    return math.nan if value is None else value


def import_backend_quietly() -> None:
    """On TensorFlow, imports it and initializes its devices with native stderr silenced.

    The backend is the one `regfw.config.backend.use` set (`KERAS_BACKEND`). TensorFlow's C++
    start-up notices (oneDNN, CUDA probing) would otherwise surround regfw's one-line messages;
    `HYDRA_FULL_ERROR=1` keeps them, for debugging. A JAX run does not import TensorFlow.
    """
    on_tensorflow = os.environ.get("KERAS_BACKEND") == "tensorflow"
    if not on_tensorflow or "tensorflow" in sys.modules or full_error():
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


def _arguments() -> argparse.ArgumentParser:
    """The flags of a Hydra app that decide what the check looks at.

    Hydra's own parser is private; everything this one does not know goes on to Hydra untouched.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--resolve",),
                  ("--run", "-r"), ("--multirun", "-m"), ("--experimental-rerun",)):  # fmt: skip
        parser.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--shell-completion", "-sc"),
                  ("--config-path", "-cp"), ("--config-name", "-cn"), ("--config-dir", "-cd"),
                  ("--info", "-i")):  # fmt: skip
        parser.add_argument(*flags, nargs="?", const="all")
    return parser


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Checks `train.py`'s command line before Hydra runs it; exits with one line if wrong.

    Every value of every sweep is checked (each against the first values of the other overrides),
    and so is where the run or sweep folder would go, so a run that would be rejected writes
    nothing and a multirun with a bad value fails before its first job starts.
    """
    problem = reported(lambda: find_problem(list(sys.argv[1:] if argv is None else argv)))
    if problem:
        fail(problem)


def find_problem(argv: list[str], folders: bool = True) -> str | None:
    """Returns a one-line description of what is wrong with the command line, or None.

    Args:
        argv: The command line's arguments.
        folders: Whether to check where the run or sweep folder would go (commands that write
            nothing, such as `regfw.explain`, leave it out).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, MissingConfigException

    args, extras = _arguments().parse_known_args(argv)
    if extras:
        return (
            f"cannot parse the command line: unrecognized arguments: {' '.join(extras)} (flags "
            "such as -m go before the overrides)"
        )
    if args.help or args.hydra_help or args.version or args.info or args.shell_completion:
        return None
    if args.config_path or args.config_dir or args.experimental_rerun:
        return None  # another config tree: Hydra checks it
    if args.cfg and not args.overrides:
        return None  # printing the defaults (which the test suite checks) writes nothing
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as error:
        return f"cannot parse the command line: {_first_lines(error)}"
    config_name = args.config_name or "config"
    ours = [o for o in overrides if not o.key_or_group.startswith("hydra")]
    cfg, backends = None, set()
    load = _variant_configs(config_name)
    for variant in _variants(overrides):
        try:
            cfg = load(variant)
        except MissingConfigException as error:
            return _missing_option(error, variant)
        except Exception as error:
            diagnosis = _diagnose_keys(ours, config_name)
            return diagnosis or f"{' '.join(variant)}: {_first_lines(error)}"
        hydra_node = cfg.hydra
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            validate(cfg)
        except UserError as error:
            return str(error)
        except Exception as error:  # a config the checks cannot even read (e.g. ~penalty)
            return f"the composed config is incomplete: {type(error).__name__}: {error}"
        backends.add(backend.resolve(cfg.trainer))
        launcher = str(OmegaConf.select(hydra_node, "launcher._target_", default=""))
        if launcher.endswith("StackedLauncher") and backend.resolve(cfg.trainer) != "jax":
            return (
                f"hydra/launcher=stacked: needs trainer.backend=jax (trainer.backend="
                f"{backend.resolve(cfg.trainer)}): a stack is one jax.vmap program; add "
                "trainer.backend=jax, or use the basic launcher"
            )
    if len(backends) > 1:
        return (
            f"trainer.backend: the jobs of this multirun ask for {' and '.join(sorted(backends))},"
            " and one process has one Keras backend: run one multirun per backend"
        )
    if cfg is not None:
        backend.use(cfg.trainer)  # before anything (the sweep callback, a job) imports Keras
    if cfg is not None and folders and not args.cfg:
        return _check_folders(hydra_node, cfg, multirun=args.multirun)
    return None


def _missing_option(error: Any, variant: list[str]) -> str:
    """`group=option: no such option` for a config group option Hydra could not find."""
    missing = str(error.missing_cfg_file or "")
    group, _, option = missing.rpartition("/")
    options = list(error.options or [])
    if not group or not options:
        return f"{' '.join(variant)}: {_first_lines(error)}"
    given = next((line for line in variant if line.split("=", 1)[-1] == option), f"{group}")
    return (
        f"{given.split('=', 1)[0]}={option}: no such option in group '{group}'."
        f"{did_you_mean(option, options)} Available: {', '.join(options)}"
    )


def _first_lines(error: BaseException, lines: int = 3) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines()[:lines] if line.strip())
    return text or type(error).__name__


def _values(override: Any) -> list[str]:
    """The value strings of an override: one, or each value of a sweep."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    try:
        return list(override.sweep_string_iterator())
    except Exception:
        return []


def _variants(overrides: list[Any]) -> list[list[str]]:
    """The overrides with the first value of every sweep, then one variant per other value."""
    options = []
    for override in overrides:
        if not override.is_sweep_override():
            options.append([override.input_line])
        elif values := _values(override):  # an interval (for a sweeper) has no values to try
            options.append([f"{override.get_key_element()}={value}" for value in values])
    first = [choices[0] for choices in options]
    variants = [first]
    for i, choices in enumerate(options):
        variants += [[*first[:i], choice, *first[i + 1 :]] for choice in choices[1:]]
    return variants


def _variant_configs(config_name: str) -> Callable[[list[str]], DictConfig]:
    """Composes the variants' configs; variants that differ only in values are copies.

    `regfw.sweeps.job_configs.JobConfigs` composes one variant of each kind with Hydra (and the
    second, to compare); a 16 x 4 grid's 19 variants take 2 compositions instead of 19. A copy
    that cannot take its values is composed by Hydra, so the error is Hydra's own.
    """
    from regfw.sweeps.job_configs import JobConfigs

    def hydra(_: Any, variant: list[str]) -> DictConfig:
        return compose(variant, config_name=config_name, return_hydra_config=True)

    configs = JobConfigs(hydra)
    groups = OmegaConf.create({"hydra": {"runtime": {"choices": dict.fromkeys(GROUPS)}}})

    def load(variant: list[str]) -> DictConfig:
        try:
            return configs.load(groups, variant)
        except Exception:
            return hydra(groups, variant)

    return load


def _diagnose_keys(overrides: list[Any], config_name: str) -> str | None:
    """Finds an override of a key that does not exist, and names the closest existing key.

    The config is composed with the group choices only (overrides without a dot), so the keys
    every group provides are known.
    """
    group_lines = [
        f"{o.get_key_element()}={v[0]}"
        for o in overrides
        if (v := _values(o)) and o.key_or_group in GROUPS and not o.is_delete()
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
                    f"Keys here: {', '.join(keys)}"
                )
            node = node[part]
    return None


def _check_folders(hydra_node: DictConfig, cfg: DictConfig, multirun: bool) -> str | None:
    """Checks where the run (or the sweep) would write, before Hydra creates anything there."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    path = OmegaConf.select(hydra_node, key.removeprefix("hydra."), default=None,
                            throw_on_resolution_failure=False)  # fmt: skip
    if path is None:
        return None  # it depends on what only the running job knows: checked by the job
    try:
        shown, path = str(path), folder.check_location(str(path), key)
        if multirun:
            _check_sweep_folder(path, bool(cfg.trainer.resume))
        else:
            _check_run_folder(path, shown, cfg)
    except RunFolderError as error:
        return str(error)
    absolute = Path(os.path.abspath(path))
    _NEW_FOLDERS[str(absolute)] = tuple(p for p in (absolute, *absolute.parents) if not p.exists())
    return None


def _check_run_folder(path: Path, shown: str, cfg: DictConfig) -> None:
    """Refuses a run folder as the run itself would (`regfw.runs.folder.plan`), but earlier.

    The run checks again when it claims the folder (with its lock); checking here too means a
    refused run answers in about a second instead of after TensorFlow's import.
    """
    from omegaconf.errors import OmegaConfBaseException

    try:
        folder.plan_run(path, cfg, f"hydra.run.dir={shown}")
    except OmegaConfBaseException:  # a value only the running job can resolve: the job checks
        return


def _check_sweep_folder(path: Path, resume: bool) -> None:
    """A sweep starts in a new or empty folder, or finishes an earlier sweep with resume."""
    if not path.is_dir():
        return
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    jobs = [e for e in entries if folder.inspect(path / e).is_run]
    if not jobs and "multirun.yaml" not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunFolderError(
            f"hydra.sweep.dir={path}: the folder is not empty and holds no regfw sweep "
            f"({shown}); choose a new or empty folder"
        )
    if not resume:
        raise RunFolderError(
            f"hydra.sweep.dir={path}: the folder already holds a sweep ({len(jobs)} job folders);"
            " finish it with trainer.resume=true, or choose a new hydra.sweep.dir"
        )
