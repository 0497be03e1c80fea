"""Configs as YAML text and back, as OmegaConf writes and reads them, with libyaml.

OmegaConf emits and parses YAML with PyYAML's pure-Python emitter and parser: about 13 ms to
write a job's Hydra config on a 2-core machine, written three times per job (`.hydra/`), and
about 10 ms to read a job's `config.yaml` back for a sweep's report. `to_yaml` and `load` do the
same through PyYAML's libyaml binding (`yaml.CDumper`, `yaml.CSafeLoader`) with OmegaConf's own
string representer, implicit resolvers (its float forms, no timestamps) and duplicate-key check,
two to four times as fast; they give the same text and the same config for every option of
regfw's groups (`tests/test_config.py` compares them). libyaml escapes some characters the
Python emitter writes as they are (an emoji): text with a backslash is emitted again by
`OmegaConf.to_yaml`. `read` gives a file's plain data, for a reader that needs no config
(a few keys of a job's `hydra.yaml`). Without libyaml, they are OmegaConf's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf._utils import get_omega_conf_dumper, get_yaml_loader


def _dumper() -> type | None:
    """A libyaml dumper with OmegaConf's string representer (None without libyaml)."""
    base = getattr(yaml, "CDumper", None)
    if base is None:
        return None
    dumper = type("OmegaConfCDumper", (base,), {})
    dumper.add_representer(str, get_omega_conf_dumper().str_representer)
    return dumper


_DUMPER = _dumper()


def _plain(value: Any) -> bool:
    """Whether `value` is dicts and lists of strings (keys too), numbers, booleans and None."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def to_yaml(cfg: Any) -> str:
    """`OmegaConf.to_yaml(cfg)` (interpolations kept, keys in order), emitted by libyaml."""
    if _DUMPER is None:
        return OmegaConf.to_yaml(cfg)
    if _plain(cfg):  # what OmegaConf.create and to_container give back as it is
        container = cfg
    else:
        config = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
        container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
    text = yaml.dump(
        container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_DUMPER
    )
    return OmegaConf.to_yaml(cfg) if "\\" in text else text


def _loader() -> type | None:
    """A libyaml loader that reads as OmegaConf's loader reads (None without libyaml)."""
    base = getattr(yaml, "CSafeLoader", None)
    if base is None:
        return None
    own = get_yaml_loader()

    def construct_mapping(self: Any, node: yaml.MappingNode, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            if key_node.tag != yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                continue
            if key_node.value in keys:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key_node.value}", key_node.start_mark,
                )  # fmt: skip
            keys.add(key_node.value)
        return base.construct_mapping(self, node, deep=deep)

    loader = type("OmegaConfCLoader", (base,), {"construct_mapping": construct_mapping})
    loader.yaml_implicit_resolvers = {k: list(v) for k, v in own.yaml_implicit_resolvers.items()}
    loader.yaml_constructors = {**base.yaml_constructors, **own.yaml_constructors}
    return loader


_LOADER = _loader()


def read(path: str | Path) -> Any:
    """A YAML file's plain data (dicts, lists, values) as OmegaConf's loader reads it."""
    with open(path, encoding="utf-8") as stream:
        return yaml.load(stream, Loader=_LOADER or get_yaml_loader())


def load(path: str | Path) -> DictConfig | ListConfig:
    """`OmegaConf.load(path)` for a file, parsed by libyaml."""
    data = read(path)
    if data is not None and not isinstance(data, (list, dict, str)):
        raise OSError(f"Invalid loaded object type: {type(data).__name__}")  # as OmegaConf.load
    return OmegaConf.create() if data is None else OmegaConf.create(data)
