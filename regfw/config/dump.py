"""Configs as YAML text, as `OmegaConf.to_yaml` writes them, with libyaml's emitter.

`OmegaConf.to_yaml` emits with PyYAML's pure-Python emitter: about 13 ms for a job's Hydra config
on a 2-core machine, written three times per job (`.hydra/`) and compared once more in a grid.
`to_yaml` emits the same container with the same options and OmegaConf's own string
representer through PyYAML's libyaml binding (`yaml.CDumper`), about twice as fast, and the
same text for every config of regfw's groups (`tests/test_config.py` compares them). libyaml
escapes some characters the Python emitter writes as they are (an emoji); text with a backslash
is emitted again by `OmegaConf.to_yaml`. Without libyaml, it is `OmegaConf.to_yaml`.
"""

from __future__ import annotations

from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper


def _dumper() -> type | None:
    """A libyaml dumper with OmegaConf's string representer (None without libyaml)."""
    base = getattr(yaml, "CDumper", None)
    if base is None:
        return None
    dumper = type("OmegaConfCDumper", (base,), {})
    dumper.add_representer(str, get_omega_conf_dumper().str_representer)
    return dumper


_DUMPER = _dumper()


def to_yaml(cfg: Any) -> str:
    """`OmegaConf.to_yaml(cfg)` (interpolations kept, keys in order), emitted by libyaml."""
    if _DUMPER is None:
        return OmegaConf.to_yaml(cfg)
    config = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
    container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
    text = yaml.dump(
        container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_DUMPER
    )
    return OmegaConf.to_yaml(cfg) if "\\" in text else text
