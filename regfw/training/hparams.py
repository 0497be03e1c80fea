"""TensorBoard HParams: the experiment (columns and domains) at a sweep's root, values per run.

TensorBoard's HParams dashboard reads the experiment from the sweep folder and one session per run
folder (siblings below it); each session's metrics are the last values of the `validation` scalars.
Values are flattened to bool/int/float/str, as the dashboard requires. A run records the keys given
on its command line plus `penalty.name` and `penalty.scale`; the sweep's table shows the swept ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config.compose import GROUPS

ALWAYS = ("penalty.name", "penalty.scale")
# (tag, group, display name): Keras's and regfw's validation scalars, as the run folders hold them.
METRICS = (
    ("epoch_loss", "validation", "validation loss"),
    ("data_loss", "validation", "validation data loss"),
    ("epoch_accuracy", "validation", "validation accuracy"),
)

Value = bool | int | float | str


def flat(value: Any) -> Value:
    """Returns `value` as a type TensorBoard's HParams accept (lists, dicts, None become text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return json.dumps(value)


def parse_overrides(lines: Iterable[str]) -> list[Any]:
    """Parses command-line overrides, leaving out Hydra's own (`hydra.*`) and deletions."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(lines))
    return [o for o in overrides if not o.key_or_group.startswith("hydra") and not o.is_delete()]


def run_values(
    cfg: DictConfig, overrides: Iterable[str] = (), choices: Mapping[str, Any] | None = None
) -> dict[str, Value]:
    """Returns the hparams of a run: each overridden key's value, plus penalty name and scale.

    Args:
        cfg: The run's composed config.
        overrides: The run's command-line overrides (`hydra.overrides.task`).
        choices: The chosen option of each config group (`hydra.runtime.choices`); a group
            override (`penalty=l1`) gets the option's name.
    """
    keys = [o.key_or_group for o in parse_overrides(overrides)]
    values = {}
    for key in dict.fromkeys([*keys, *ALWAYS]):
        if key in GROUPS and choices is not None and key in choices:
            values[key] = flat(choices[key])
        else:
            values[key] = flat(OmegaConf.select(cfg, key, default=None))
    return values


def hydra_run_values(cfg: DictConfig) -> dict[str, Value]:
    """`run_values` with the overrides and group choices of the current Hydra job, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return run_values(cfg)
    hydra_cfg = HydraConfig.get()
    return run_values(cfg, hydra_cfg.overrides.task, hydra_cfg.runtime.choices)


def domains(overrides: Iterable[str], search_space: Mapping[str, str] | None = None) -> dict:
    """Returns `hparams.api.HParam`s for the columns of a sweep, with domains from its values.

    The columns are the swept keys, the searched keys and `penalty.name`/`penalty.scale`; a run's
    other values (keys given once on the command line) stay out of the table.

    Args:
        overrides: The sweep's command-line overrides (`a=1,2`, `group=x,y`, `b=3`).
        search_space: A sweeper's parameters (`hydra.sweeper.params`: key -> override value, such
            as `tag(log, interval(1e-5, 1e-1))`).

    Returns:
        Column name -> `HParam`: discrete over the listed values, an interval for an interval
        sweep, no domain for `penalty.name`/`penalty.scale` when they are not swept.
    """
    from tensorboard.plugins.hparams import api as hp

    swept = [o for o in parse_overrides(overrides) if o.is_sweep_override()]
    searched = parse_overrides(f"{k}={v}" for k, v in (search_space or {}).items())
    columns = {o.key_or_group: hp.HParam(o.key_or_group, _domain(o)) for o in swept + searched}
    for key in ALWAYS:
        columns.setdefault(key, hp.HParam(key))
    return columns


def _domain(override: Any) -> Any:
    from hydra.core.override_parser.types import IntervalSweep
    from tensorboard.plugins.hparams import api as hp

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


def write_experiment(sweep_dir: str | Path, columns: Mapping[str, Any]) -> None:
    """Writes the HParams experiment (columns and the validation metrics) to `sweep_dir`."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    metrics = [hp.Metric(tag, group=group, display_name=name) for tag, group, name in METRICS]
    writer = tf.summary.create_file_writer(str(sweep_dir))
    with writer.as_default():
        hp.hparams_config(hparams=list(columns.values()), metrics=metrics)
    writer.close()


def write_run(run_dir: str | Path, values: Mapping[str, Value]) -> None:
    """Writes a run's hparams to its folder (a session for TensorBoard's HParams dashboard)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        hp.hparams(dict(values))
    writer.close()
