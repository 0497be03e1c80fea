"""The effective config: the composed config without the keys that change nothing.

What TensorBoard's `config` text shows. A term's `schedule` keeps only the keys its schedule reads
(`constant`: just its name), and empty `penalties`, `constraints` and `plugins` are left out. The
run's record (`.hydra/config.yaml`) keeps the whole composed config.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config.schedules import PARAMETERS
from regfw.config.terms import term_specs
from regfw.config.yaml_text import to_yaml

EMPTY_WHEN_UNUSED = ("penalties", "constraints", "plugins")


def effective(cfg: DictConfig) -> dict[str, Any]:
    """Returns `cfg` as plain, resolved data without its inert keys (see the module docstring).

    Args:
        cfg: A composed config (without Hydra's node).
    """
    data = OmegaConf.to_container(cfg, resolve=True)
    for _, path, _ in term_specs(cfg, "penalty"):
        term = data
        for part in path.split("."):
            term = term[part]
        schedule = term.get("schedule")
        if isinstance(schedule, dict):
            used = PARAMETERS.get(schedule.get("name"), tuple(schedule))
            term["schedule"] = {k: v for k, v in schedule.items() if k == "name" or k in used}
    for key in EMPTY_WHEN_UNUSED:
        if key in data and not data[key]:
            del data[key]
    return data


def effective_yaml(cfg: DictConfig) -> str:
    """The effective config as YAML text."""
    return to_yaml(effective(cfg))
