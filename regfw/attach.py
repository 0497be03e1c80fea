"""Turns the `penalty` config into penalty terms attached to a model's weights.

A term is a registry-built penalty plus the weights its selectors match. Attaching sets
`variable.regularizer`, so Keras adds the penalty to the loss exactly once per step: not weighted by
`sample_weight` or `class_weight`, not repeated per output, scaled per replica under tf.distribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw import penalties
from regfw.schema import SELECTION_KEYS
from regfw.selection import select_weights


@dataclass(frozen=True)
class PenaltyTerm:
    """One penalty applied to a set of weights.

    Attributes:
        name: The term's name, used in the `penalty/<name>` logs.
        penalty: The regularizer (`scale * value(w)`).
        variables: The weights it is attached to.
    """

    name: str
    penalty: penalties.Penalty
    variables: tuple[Any, ...]


def penalty_specs(penalty_cfg: DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """Returns `(term name, penalty config)` pairs for the `penalty` group (none: no terms)."""
    spec = OmegaConf.to_container(penalty_cfg, resolve=True)
    if spec["name"] == "none":
        return []
    return [(spec["name"], spec)]


def attach_penalties(model: Any, penalty_cfg: DictConfig) -> list[PenaltyTerm]:
    """Builds every configured term and attaches it to the weights it selects.

    Args:
        model: A built, uncompiled Keras model.
        penalty_cfg: The `penalty` config group.

    Returns:
        The attached terms.

    Raises:
        regfw.selection.SelectionError: If a term matches no weight.
        regfw.registry.UnknownNameError: If a penalty name is not registered.
    """
    terms = []
    for term_name, spec in penalty_specs(penalty_cfg):
        params = {k: v for k, v in spec.items() if k != "name" and k not in SELECTION_KEYS}
        penalty = penalties.get(spec["name"], **params)
        selection = {k: spec[k] for k in SELECTION_KEYS if k in spec}
        variables = select_weights(model, term=term_name, **selection)
        for variable in variables:
            if variable.regularizer is not None:
                raise ValueError(f"weight {variable.path} already has a penalty")
            variable.regularizer = penalty
        terms.append(PenaltyTerm(term_name, penalty, tuple(variables)))
    return terms
