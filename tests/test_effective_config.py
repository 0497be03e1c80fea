"""The effective config TensorBoard's `config` text shows: the composed config without inert keys."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import regfw
from regfw.config.compose import conf_dir
from regfw.config.effective import effective
from regfw.config.schedules import PARAMETERS, SCHEDULES, multiplier


def test_effective_config_keeps_only_the_keys_that_act():
    cfg = regfw.compose(
        ["penalty=l1", "penalty.schedule.name=warmup", "+penalty@penalties.rest=orthogonal",
         "penalties.rest.schedule.name=step"]
    )  # fmt: skip
    full = OmegaConf.to_container(cfg, resolve=True)
    shown = effective(cfg)
    assert shown["penalty"]["schedule"] == {"name": "warmup", "epochs": 10}
    assert shown["penalties"]["rest"]["schedule"] == {"name": "step", "every": 5, "factor": 0.1}
    assert "constraints" not in shown and "plugins" not in shown  # empty: nothing to say
    for data in (full, shown):
        data["penalty"].pop("schedule"), data["penalties"]["rest"].pop("schedule")
    assert shown == {k: v for k, v in full.items() if k not in ("constraints", "plugins")}

    default = effective(regfw.compose([]))
    assert default["penalty"]["schedule"] == {"name": "constant"}
    assert "penalties" not in default
    assert cfg.penalty.schedule.every == 5  # the config itself is left as it was


def test_each_schedule_reads_exactly_its_parameters():
    assert set(PARAMETERS) == set(SCHEDULES)
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir() / "term" / "schedule.yaml"))
    defaults = defaults["schedule"]
    for name, keys in PARAMETERS.items():
        full = {**defaults, "name": name}
        used = {"name": name, **{k: full[k] for k in keys}}
        assert [multiplier(used, e) for e in range(12)] == [multiplier(full, e) for e in range(12)]
        for key in keys:  # each listed key is read: without it the schedule fails
            with pytest.raises(KeyError):
                [multiplier({k: v for k, v in used.items() if k != key}, e) for e in range(12)]
