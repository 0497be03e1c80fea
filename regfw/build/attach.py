"""Turns the `penalty`, `penalties` and `constraints` config into terms attached to weights.

A penalty term is a registry-built penalty plus the weights its selectors match. Attaching sets
`variable.regularizer`, so Keras adds the penalty to the loss exactly once per step: not weighted
by `sample_weight` or `class_weight`, not repeated per output, scaled per replica under
tf.distribute. Two terms on one weight are summed (`penalties.Combined`). A constraint term sets
`variable.constraint`, which the optimizer applies after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from regfw import penalties
from regfw.build import constraints
from regfw.config.schema import SELECTION_KEYS, ConfigError
from regfw.config.terms import term_specs
from regfw.build.selection import select_weights

NOT_PARAMS = ("name", "schedule", *SELECTION_KEYS)


@dataclass(frozen=True)
class PenaltyTerm:
    """One penalty applied to a set of weights.

    Attributes:
        name: The term's name, used in the `penalty/<name>` and `penalty_scale/<name>` logs.
        penalty: The regularizer (`scale * value(w)`).
        variables: The weights it is attached to.
        base_scale: The configured scale (schedules multiply it).
        schedule: The term's `schedule` config, or None for a constant scale.
    """

    name: str
    penalty: penalties.Penalty
    variables: tuple[Any, ...]
    base_scale: float = 0.0
    schedule: dict[str, Any] | None = field(default=None)


def _params(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in NOT_PARAMS}


def _selection(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in SELECTION_KEYS if k in spec}


def build_penalty(path: str, spec: dict[str, Any]) -> penalties.Penalty:
    """Builds the penalty a term spec names.

    Raises:
        ConfigError: If the penalty does not take one of the spec's parameters.
    """
    try:
        return penalties.get(spec["name"], **_params(spec))
    except TypeError as error:
        raise ConfigError(f"{path}.name", spec["name"], str(error)) from None


def attach_penalties(model: Any, cfg: DictConfig) -> list[PenaltyTerm]:
    """Builds every configured penalty term and attaches it to the weights it selects.

    Args:
        model: A built, uncompiled Keras model.
        cfg: The whole config (`penalty` and `penalties`).

    Returns:
        The attached terms.

    Raises:
        regfw.build.selection.SelectionError: If a term matches no weight.
        regfw.registry.UnknownNameError: If a penalty name is not registered.
    """
    terms = []
    for name, path, spec in term_specs(cfg, "penalty"):
        penalty = build_penalty(path, spec)
        variables = select_weights(model, term=name, **_selection(spec))
        for variable in variables:
            previous = variable.regularizer
            if previous is None:
                variable.regularizer = penalty
            elif isinstance(previous, penalties.Combined):
                previous.parts.append(penalty)
            else:
                variable.regularizer = penalties.Combined([previous, penalty])
        terms.append(
            PenaltyTerm(name, penalty, tuple(variables), penalty.scale, spec.get("schedule"))
        )
    return terms


def attach_constraints(model: Any, cfg: DictConfig) -> dict[str, list[Any]]:
    """Attaches every configured constraint term; returns term name -> constrained weights.

    Raises:
        ConfigError: If two constraint terms select the same weight.
        regfw.build.selection.SelectionError: If a term matches no weight.
    """
    attached = {}
    for name, path, spec in term_specs(cfg, "constraint"):
        variables = select_weights(model, term=name, **_selection(spec))
        for variable in variables:
            if variable.constraint is not None:
                raise ConfigError(
                    f"{path}.include", spec.get("include"),
                    f"weight {variable.path} already has a constraint; one constraint per weight",
                )  # fmt: skip
            variable.constraint = constraints.build(spec["name"], variable.shape, **_params(spec))
        attached[name] = variables
    return attached
