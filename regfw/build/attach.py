"""Turns the `penalty`, `penalties` and `constraints` config into terms attached to weights.

A penalty term is a registry-built penalty plus the weights its selectors match. Attaching sets
`variable.regularizer`, so Keras adds the penalty to the loss exactly once per step: not weighted
by `sample_weight` or `class_weight`, not repeated per output, scaled per replica under
tf.distribute. Two terms on one weight are summed (`penalties.Combined`). A constraint term sets
`variable.constraint`, which the optimizer applies after every step.

A weight on which a penalty is undefined (Keras's orthogonal regularizer on a one-column kernel)
is left out of the term, with the reason, rather than adding NaN to the loss. Each term's scale,
and the persistent block of power-iteration penalties (`spectral`, `srip`) for each weight, are
non-trainable weights of a `PenaltyState` layer tracked by the model: they are part of the
training state (checkpoints; JAX's stateless steps carry them, so a schedule's new scale takes
effect without retracing) but not of any layer a plain Keras load rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops
from omegaconf import DictConfig

from regfw import penalties
from regfw.build import constraints
from regfw.build.selection import SelectionError, select_weights
from regfw.config.schema import SELECTION_KEYS, ConfigError
from regfw.config.terms import term_specs

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
        states: The persistent power-iteration vector of each weight (by path), if any.
        skipped: The selected weights the penalty is undefined on, left out, with the reason.
    """

    name: str
    penalty: penalties.Penalty
    variables: tuple[Any, ...]
    base_scale: float = 0.0
    schedule: dict[str, Any] | None = field(default=None)
    states: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    def value_of(self, variable: Any) -> Any:
        """The term's scaled penalty on one of its weights, without changing any state."""
        state = self.states.get(variable.path)
        if state is None:
            return self.penalty(variable)
        return self.penalty.estimate(variable, state)


class PenaltyState(keras.layers.Layer):
    """Holds the persistent vectors of power-iteration penalties as non-trainable weights.

    Tracked by the model as `model.penalty_state`, outside the layer graph: saved with the
    model's weights (checkpoints restore them exactly) and ignored by a plain Keras load.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trainable=False, **kwargs)
        self.built = True


class StatefulRegularizer(keras.regularizers.Regularizer):
    """A power-iteration penalty bound to the persistent vector of one weight."""

    def __init__(self, penalty: Any, state: Any) -> None:
        self.penalty, self.state = penalty, state

    def __call__(self, w: Any) -> Any:
        return self.penalty.step(w, self.state)

    def get_config(self) -> dict[str, Any]:
        return self.penalty.get_config()


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
        regfw.build.selection.SelectionError: If a term matches no weight (or none it is
            defined on).
        regfw.registry.UnknownNameError: If a penalty name is not registered.
    """
    terms = []
    for name, path, spec in term_specs(cfg, "penalty"):
        penalty = build_penalty(path, spec)
        penalty.bind_scale(_state(model).add_weight(
            shape=(), initializer="zeros", dtype=penalty.scale_variable.dtype, trainable=False,
            name=f"{name}.scale", aggregation="only_first_replica",
        ))  # fmt: skip
        selected = select_weights(model, term=name, **_selection(spec))
        reasons = {v.path: penalty.unsupported(tuple(v.shape)) for v in selected}
        skipped = tuple(f"{v.path} {tuple(v.shape)}: {reasons[v.path]}" for v in selected
                        if reasons[v.path])  # fmt: skip
        variables = [v for v in selected if not reasons[v.path]]
        if not variables:
            raise SelectionError(
                f"penalty term '{name}' ({spec['name']}) is undefined on every weight it selects: "
                + "; ".join(skipped)
            )
        states = {}
        for variable in variables:
            regularizer = penalty
            if isinstance(penalty, penalties.PowerIterationPenalty):
                states[variable.path] = _power_state(model, name, penalty, variable)
                regularizer = StatefulRegularizer(penalty, states[variable.path])
            _add_regularizer(variable, regularizer)
        terms.append(
            PenaltyTerm(
                name,
                penalty,
                tuple(variables),
                penalty.scale,
                spec.get("schedule"),
                states,
                skipped,
            )
        )
    return terms


def _add_regularizer(variable: Any, regularizer: Any) -> None:
    """Sets a weight's regularizer; a second term on the same weight is added to the first."""
    previous = variable.regularizer
    if previous is None:
        variable.regularizer = regularizer
    elif isinstance(previous, penalties.Combined):
        previous.parts.append(regularizer)
    else:
        variable.regularizer = penalties.Combined([previous, regularizer])


def _state(model: Any) -> PenaltyState:
    """The model's `PenaltyState` layer, created on first use."""
    if not isinstance(getattr(model, "penalty_state", None), PenaltyState):
        model.penalty_state = PenaltyState(name="penalty_state")
    return model.penalty_state


def _power_state(model: Any, term: str, penalty: Any, variable: Any) -> Any:
    """Creates the persistent power-iteration block of one weight, exact on its value."""
    start = penalty.initial_state(ops.convert_to_numpy(variable))
    state = _state(model).add_weight(
        shape=start.shape,
        initializer="zeros",
        trainable=False,
        name=f"{term}.{variable.path.replace('/', '.')}",
        aggregation="only_first_replica",  # every replica computes the same vector
    )
    state.assign(start.astype(np.float32))
    return state


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
