"""Checks of penalty and constraint terms (`penalty`, `penalties.*`, `constraints.*`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config.checks import ConfigError, choice, number, string_list
from regfw.config.options import group_options
from regfw.config.schedules import SCHEDULES

PARAM_RULES: dict[str, dict[str, Any]] = {
    "alpha": {"low": 0},
    "l1": {"low": 0},
    "l2": {"low": 0},
    "factor": {"low": 0},
    "max_value": {"low": 0, "low_open": True},
    "iterations": {"low": 1, "integer": True},
    "lower": {},
    "upper": {},
}
# Term names that would collide with regfw's own log tags (`penalty/total`).
RESERVED_TERM_NAMES = ("total",)


def term_specs(cfg: DictConfig, kind: str = "penalty") -> list[tuple[str, str, dict[str, Any]]]:
    """Returns `(term name, config path, spec)` for every configured term of a kind.

    Args:
        cfg: The whole config.
        kind: `penalty` (the `penalty` group unless it is `none`, then the `penalties` entries;
            the first term is named after its penalty) or `constraint` (the `constraints`
            entries).

    Raises:
        ConfigError: If `penalties` or `constraints` is not a mapping of term name -> config.
    """
    specs = []
    if kind == "penalty":
        main = OmegaConf.to_container(cfg.penalty, resolve=True)
        if main.get("name") != "none":
            specs.append((main.get("name"), "penalty", main))
    group = "penalties" if kind == "penalty" else "constraints"
    node = cfg.get(group)
    terms = {} if node is None else OmegaConf.to_container(node, resolve=True)
    if not isinstance(terms, dict):
        raise ConfigError(group, terms, f"expected a mapping of term name -> {kind} config")
    for name, spec in terms.items():
        path = f"{group}.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(path, spec, f"expected a {kind} config: +{kind}@{path}=<option>")
        specs.append((name, path, spec))
    return specs


def validate_terms(cfg: DictConfig) -> None:
    """Checks the `penalty` term, every `penalties.*` and `constraints.*` term.

    Raises:
        ConfigError: For the first value that is not allowed.
    """
    main = OmegaConf.to_container(cfg.penalty, resolve=True)  # keeps a missing name as "???"
    if main.get("name") == "none":
        number("penalty.scale", main.get("scale"), low=0)
    for kind in ("penalty", "constraint"):
        for name, path, spec in term_specs(cfg, kind):
            if path.startswith("penalties.") and name == main.get("name"):
                raise ConfigError(
                    path, name, f"the term name is taken by penalty={name}; rename it"
                )
            if kind == "penalty" and name in RESERVED_TERM_NAMES:
                key = f"{path}.name" if path == "penalty" else path
                raise ConfigError(
                    key, name, f"'{name}' is reserved (regfw logs penalty/{name}); name the "
                    "term differently",
                )  # fmt: skip
            _validate_term(path, spec, constraint=kind == "constraint")


def _validate_term(path: str, spec: dict[str, Any], constraint: bool = False) -> None:
    name = spec.get("name")
    if constraint:
        choice(f"{path}.name", name, group_options("constraint"))
    elif not isinstance(name, str) or not name or name == "???":
        raise ConfigError(f"{path}.name", name, "expected the name of a registered penalty")
    else:
        number(f"{path}.scale", spec.get("scale"), low=0)
    if "include" in spec:
        string_list(f"{path}.include", spec["include"])
    if "exclude" in spec:
        string_list(f"{path}.exclude", spec["exclude"])
    if "min_ndim" in spec:
        number(f"{path}.min_ndim", spec["min_ndim"], low=0, integer=True)
    for key, rule in PARAM_RULES.items():
        if key in spec:
            number(f"{path}.{key}", spec[key], **rule)
    if "lower" in spec and "upper" in spec and spec["lower"] > spec["upper"]:
        raise ConfigError(
            f"{path}.lower", spec["lower"], f"expected lower <= upper (upper={spec['upper']})"
        )
    if "mode" in spec:
        choice(f"{path}.mode", spec["mode"], ("rows", "columns"))
    if "schedule" in spec:
        _validate_schedule(f"{path}.schedule", spec["schedule"])


def _validate_schedule(path: str, schedule: Any) -> None:
    if not isinstance(schedule, dict):
        raise ConfigError(path, schedule, "expected a mapping with name: " + ", ".join(SCHEDULES))
    choice(f"{path}.name", schedule.get("name"), SCHEDULES)
    if schedule["name"] in ("warmup", "cosine"):
        number(f"{path}.epochs", schedule.get("epochs"), low=1, integer=True)
    if schedule["name"] == "step":
        number(f"{path}.every", schedule.get("every"), low=1, integer=True)
        number(f"{path}.factor", schedule.get("factor"), low=0)
    if schedule["name"] == "cosine":
        number(f"{path}.final", schedule.get("final"), low=0, high=1)
