"""TensorBoard HParams: a session per run folder, the experiment (columns, metrics) per sweep.

A run writes its session when it ends (a job that fails, when it is recorded): its hparams (the
keys given on its command line, `penalty.name`, `penalty.scale` and `status`), TensorBoard's own
status (success for a completed run, failure otherwise) and its trial name. TensorBoard names a
session by its folder relative to the logdir, groups sessions by trial name (`trial_id`) and shows
that name as the table's "Trial ID": a sweep job's is its job number and its values of the swept
keys (`3 penalty=l1 penalty.scale=0.001`), a single run's its folder name and its overrides.

A sweep writes the experiment when it ends: a column per swept or searched key (a `penalty=...`
sweep is the `penalty.name` column: each `conf/penalty` option names its penalty after itself)
plus `penalty.name`, `penalty.scale` and `status`, and a metric per final value the jobs report
(train and validation loss, data loss and accuracy or mae, each `penalty/...`, the model-wide
`diagnostics/...`). Values are flattened to bool/int/float/str, as the dashboard requires.

TensorBoard uses one experiment for a whole logdir (the first it finds), so a logdir that holds
several sweeps shows one sweep's columns for all; open one sweep per TensorBoard.
Nothing here imports TensorFlow (the sweep's own process writes the experiment).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config.compose import GROUPS
from regfw.training import events

ALWAYS = ("penalty.name", "penalty.scale")
STATUS = "status"
# Every status a run or job can end with (metrics.json); the `status` column's domain.
STATUSES = ("completed", "diverged", "failed", "timeout", "cancelled")
# metrics.json section -> (TensorBoard group, how its keys become tags)
SECTIONS = {
    "validation": ("validation", lambda k: k if k == "data_loss" else f"epoch_{k}"),
    "train": ("train", lambda k: k if k == "data_loss" else f"epoch_{k}"),
    "penalty": ("train", lambda k: f"penalty/{k}"),
    "diagnostics": ("train", lambda k: f"diagnostics/{k}"),
}

# TensorBoard shows the first five metrics of an experiment; these come first, in this order.
FIRST = ("validation/data_loss", "validation/accuracy", "validation/mae", "penalty/total",
         "validation/loss", "train/data_loss")  # fmt: skip

Value = bool | int | float | str


def flat(value: Any) -> Value:
    """Returns `value` as a type TensorBoard's HParams accept (lists, dicts, None become text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return json.dumps(value)


@functools.lru_cache(maxsize=4096)
def _parsed(line: str) -> Any:
    """One override parsed by Hydra's parser, once per distinct line.

    Parsing takes about 0.5 ms an override, and every job of a sweep has its overrides parsed
    for its HParams, its trial name and the sweep's report. Callers only read the result.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([line])[0]


def parse_overrides(lines: Iterable[str]) -> list[Any]:
    """Parses command-line overrides, leaving out Hydra's own (`hydra.*`) and deletions."""
    overrides = [_parsed(line) for line in lines]
    return [o for o in overrides if not o.key_or_group.startswith("hydra") and not o.is_delete()]


def column(override: Any) -> str:
    """The hparam an override sets: its key; `penalty.name` for the `penalty` group's option."""
    if override.package:
        return f"{override.key_or_group}@{override.package}"
    return "penalty.name" if override.key_or_group == "penalty" else override.key_or_group


def run_values(
    cfg: DictConfig | Mapping[str, Any],
    overrides: Iterable[str] = (),
    choices: Mapping[str, Any] | None = None,
) -> dict[str, Value]:
    """Returns the hparams of a run: each overridden key's value, plus penalty name and scale.

    Args:
        cfg: The run's composed config, or its plain data (`config.yaml` as read by
            `regfw.config.yaml_text.read`: a sweep's report reads every job's).
        overrides: The run's command-line overrides (`hydra.overrides.task`).
        choices: The chosen option of each config group (`hydra.runtime.choices`); a group
            override (`model=cnn`) gets the option's name.
    """
    keys = [column(o) for o in parse_overrides(overrides)]
    values = {}
    for key in dict.fromkeys([*keys, *ALWAYS]):
        if (key in GROUPS or "@" in key) and choices is not None and key in choices:
            values[key] = flat(choices[key])
        else:
            values[key] = flat(_select(cfg, key))
    return values


def _select(cfg: DictConfig | Mapping[str, Any], key: str) -> Any:
    """`OmegaConf.select(cfg, key, default=None)`, on plain data without making a config of it.

    Making an OmegaConf config of a job's `config.yaml` takes about 10 ms; walking its data
    takes microseconds. A value OmegaConf would resolve (an interpolation, a missing `???`) or
    a key that is not a path of mapping keys is selected by OmegaConf itself.
    """
    if OmegaConf.is_config(cfg):
        return OmegaConf.select(cfg, key, default=None)
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping):  # a list index, or a key under a value
            return _select(OmegaConf.create(dict(cfg)), key)
        if part not in node:
            return None
        node = node[part]
    return _select(OmegaConf.create(dict(cfg)), key) if _resolvable(node) else node


def _resolvable(value: Any) -> bool:
    """Whether `value` holds a string OmegaConf treats specially (an interpolation or `???`)."""
    if isinstance(value, str):
        return "${" in value or value == "???"
    if isinstance(value, Mapping):
        return any(_resolvable(v) for v in value.values())
    if isinstance(value, list):
        return any(_resolvable(v) for v in value)
    return False


def hydra_run_values(cfg: DictConfig) -> dict[str, Value]:
    """`run_values` with the overrides and group choices of the current Hydra job, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return run_values(cfg)
    hydra_cfg = HydraConfig.get()
    return run_values(cfg, hydra_cfg.overrides.task, hydra_cfg.runtime.choices)


def swept(overrides: Iterable[str], search_space: Mapping[str, str] | None = None) -> list[Any]:
    """The overrides of a sweep that vary: sweeps (`a=1,2`) and a sweeper's searched keys."""
    listed = [o for o in parse_overrides(overrides) if o.is_sweep_override()]
    return listed + parse_overrides(f"{k}={v}" for k, v in (search_space or {}).items())


def trial_name(run_dir: str | Path) -> str:
    """The run's trial name: job number and swept values in a sweep, else folder and overrides.

    A job finds the swept keys in its sweep's `multirun.yaml` (written by Hydra's sweepers before
    the first job); without it, every override of the job is in the name.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return Path(run_dir).name
    hydra_cfg = HydraConfig.get()
    overrides = parse_overrides(hydra_cfg.overrides.task)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return " ".join([Path(run_dir).name, *(o.input_line for o in overrides)])
    sweep_file = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if sweep_file.is_file():
        stat = sweep_file.stat()
        keys = _swept_keys(str(sweep_file), stat.st_mtime_ns, stat.st_size)
        overrides = [o for o in overrides if column(o) in keys]
    return " ".join([str(hydra_cfg.job.num), *(o.input_line for o in overrides)])


@functools.lru_cache(maxsize=8)
def _swept_keys(sweep_file: str, mtime_ns: int, size: int) -> frozenset[str]:
    """The columns a sweep varies, from its `multirun.yaml`.

    Read once per version of the file: every job of a stacked sweep asks, and reading it takes
    about 0.1 s.
    """
    sweep = OmegaConf.load(sweep_file).hydra
    params = OmegaConf.select(sweep, "sweeper.params", default=None)
    return frozenset(column(o) for o in swept(sweep.overrides.task, params or {}))


def domains(overrides: Iterable[str], search_space: Mapping[str, str] | None = None) -> dict:
    """Returns `HParam`s for the columns of a sweep, with domains from its values.

    The columns are the swept keys, the searched keys, `penalty.name`, `penalty.scale` and
    `status`; a run's other values (keys given once on the command line) stay out of the table.

    Args:
        overrides: The sweep's command-line overrides (`a=1,2`, `group=x,y`, `b=3`).
        search_space: A sweeper's parameters (`hydra.sweeper.params`: key -> override value, such
            as `tag(log, interval(1e-5, 1e-1))`).

    Returns:
        Column name -> `HParam`: discrete over the listed values, an interval for an interval
        sweep, no domain for `penalty.name`/`penalty.scale` when they are not swept.
    """
    from tensorboard.plugins.hparams import summary_v2 as hp

    columns = {column(o): hp.HParam(column(o), _domain(o)) for o in swept(overrides, search_space)}
    for key in ALWAYS:
        columns.setdefault(key, hp.HParam(key))
    columns[STATUS] = hp.HParam(STATUS, hp.Discrete(list(STATUSES)))
    return columns


def _domain(override: Any) -> Any:
    from hydra.core.override_parser.types import IntervalSweep
    from tensorboard.plugins.hparams import summary_v2 as hp

    value = override.value()
    if isinstance(value, IntervalSweep):
        if all(isinstance(v, int) for v in (value.start, value.end)):
            return hp.IntInterval(int(value.start), int(value.end))
        return hp.RealInterval(float(value.start), float(value.end))
    values = [flat(v) for v in override.sweep_iterator()] if override.is_sweep_override() else []
    values = values or [flat(override.value())]  # a searched key fixed to one value
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        kind = int if all(isinstance(v, int) for v in values) else float
        return hp.Discrete(sorted({kind(v) for v in values}))
    if not all(type(v) is type(values[0]) for v in values):
        values = [str(v) for v in values]
    return hp.Discrete(list(dict.fromkeys(values)))


def metrics(keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """The HParams metrics for summary columns such as `validation/data_loss`, `penalty/l1`.

    Returns:
        `(tag, group, display name)` per column of a `SECTIONS` section, as the run folders hold
        the scalars: `FIRST` first, then by section (validation, train, penalty, diagnostics).
    """
    keys = list(dict.fromkeys(keys))
    ordered = [k for k in FIRST if k in keys] + [
        k for section in SECTIONS for k in keys if k.startswith(f"{section}/") and k not in FIRST
    ]
    found = []
    for key in ordered:
        section, _, name = key.partition("/")
        group, tag = SECTIONS[section]
        shown = f"{section} {name}" if section in ("train", "validation") else key
        found.append((tag(name), group, shown))
    return found


def write_experiment(
    sweep_dir: str | Path, columns: Mapping[str, Any], metric_names: Sequence[tuple[str, str, str]]
) -> Path:
    """Writes the HParams experiment (columns, metrics) to `sweep_dir`, replacing regfw's last."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    metric_infos = [hp.Metric(tag, group=group, display_name=name)
                    for tag, group, name in metric_names]  # fmt: skip
    summary = hp.hparams_config_pb(hparams=list(columns.values()), metrics=metric_infos)
    return events.write(sweep_dir, "experiment", [summary])


def write_session(
    run_dir: str | Path, values: Mapping[str, Value], trial: str, status: str
) -> Path:
    """Writes a run's session: hparams with `status`, trial name, TensorBoard's own status.

    Replaces the session regfw wrote there before (a job resumed after it failed).
    """
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    start = hp.hparams_pb({**values, STATUS: status}, trial_id=trial)
    ended = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS if status == "completed" else api_pb2.STATUS_FAILURE,
        end_time_secs=time.time(),
    )
    end = summary_pb2.Summary()
    end.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(session_end_info=ended)
        ),
        tensor=metadata.NULL_TENSOR,
    )
    return events.write(run_dir, "session", [start, end])


def write_run(run_dir: str | Path, cfg: DictConfig, status: str) -> Path:
    """Writes the session of the run in `run_dir` (current Hydra job, if any) with `status`."""
    return write_session(run_dir, hydra_run_values(cfg), trial_name(run_dir), status)
