"""Every penalty in the catalogue against its numpy formula, on every kind of shape.

Values and gradients (central differences of the formula) on 2-D weights, conv kernels, very
wide, very tall and 1x1 weights, in float64, at each penalty's default parameters. The tolerances
are the ones the README's penalty table states (column "checked to"), read from the README, so
the table and the test cannot drift apart. A weight a penalty is undefined on must be declared
(`unsupported`), and then Keras really gives NaN there.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from regfw import penalties
from regfw.penalties.base import _REGISTRY
from tests.conftest import REPO
from tests.penalty_helpers import NP_REF, away_from, numeric_gradient, stable_seed, to_numpy

SHAPES = [(1, 1), (1, 6), (6, 1), (2, 64), (64, 2), (5, 5), (7, 3), (3, 3, 2, 4), (1, 1, 3, 5)]
KINKED_AT_ZERO = ("l1", "elastic", "hoyer", "keras_l1", "keras_l1l2")
SCALE = 0.375


def readme_tolerances() -> dict[str, tuple[float, float]]:
    """name -> (value rtol, gradient rtol), from the README's penalty table."""
    section = (REPO / "README.md").read_text().split("## Penalties\n", 1)[1].split("\n### ", 1)[0]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    column = [c.strip() for c in header.strip("|").split("|")].index("checked to")
    found = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        numbers = [float(x) for x in re.findall(r"[\d.]+e-\d+", cells[column])]
        for name in re.findall(r"`(\w+)`", cells[0]) if numbers else []:
            found[name] = (numbers[0], numbers[1])
    return found


TOLERANCES = readme_tolerances()
SHIPPED = sorted(
    name for name in penalties.available() if _REGISTRY.lookup(name).__module__.startswith("regfw")
)


def test_the_readme_states_a_tolerance_for_every_shipped_penalty():
    assert sorted(TOLERANCES) == SHIPPED
    assert len(SHIPPED) == 15


def weights(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Seeded float64 weights away from the penalty's kinks."""
    rng = np.random.default_rng(stable_seed("property", name, shape))
    w = rng.normal(0.0, 0.8, size=shape)
    if name == "clip":
        w = away_from(3 * w, [-1.0, 1.0])  # some entries outside [-1, 1]
    if name in KINKED_AT_ZERO:
        w = away_from(w, [0.0])
    if name == "max_norm":  # column norms alternate well below and above max_value = 3
        m = w.reshape(-1, shape[-1])
        targets = np.where(np.arange(shape[-1]) % 2 == 0, 1.5, 4.5)
        w = (m / np.linalg.norm(m, axis=0) * targets).reshape(shape)
    return w


def formula(name: str, penalty: penalties.Penalty):
    params = {k: v for k, v in penalty.get_config().items() if k not in ("scale", "iterations")}
    return lambda w: SCALE * NP_REF[name](w, **params)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", SHIPPED)
def test_value_and_gradient_match_the_formula(name, shape):
    penalty = penalties.get(name, scale=SCALE)
    w = weights(name, shape)
    reason = penalty.unsupported(shape)
    if reason:
        raw = to_numpy(penalty(keras.Variable(w)))
        assert np.isnan(raw), f"{name} declares {shape} unsupported ({reason}) but is finite"
        return
    value_rtol, gradient_rtol = TOLERANCES[name]
    variable = tf.Variable(w, dtype=tf.float64)
    with tf.GradientTape() as tape:
        out = penalty(variable)
    gradient = tape.gradient(out, variable).numpy()
    reference = formula(name, penalty)
    expected = reference(w)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=value_rtol, atol=value_rtol * 1e-3)
    fd = numeric_gradient(reference, w)
    # The gradient's natural size: its largest entry, or value / rms(w) where it vanishes (hoyer
    # on one entry is constant: the formula's gradient is 0, the eps-smoothed one 1e-12).
    size = max(np.max(np.abs(fd)), abs(expected) / np.sqrt(np.mean(w**2)))
    np.testing.assert_allclose(gradient, fd, rtol=gradient_rtol, atol=gradient_rtol * size)
