"""Tests for the penalty catalogue: each penalty against an independent numpy formula.

Covers elastic, orthogonal_offdiag, srip, spectral, group_lasso, hoyer and max_norm (values,
gradients, zero weights, low precision), the wrappers of Keras's own regularizers (keras_l1,
keras_l2, keras_l1l2, keras_orthogonal) against Keras applied directly and against numpy, the
registry entries and `penalties.Combined`.

Every expected number is computed here in numpy (float64) from the formula in the penalty's
docstring, never with the code under test. `W` is the weight reshaped to (-1, last_dim) and
"columns" are `W[:, j]` (one per output unit or filter).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from regfw import penalties
from tests.penalty_helpers import (
    NP_REF,
    as_matrix,
    away_from,
    dtype_of,
    np_hoyer,
    np_max_norm,
    np_orthogonal_offdiag,
    np_spectral,
    np_srip,
    numeric_gradient,
    stable_seed,
    to_numpy,
)

OWN = ("elastic", "orthogonal_offdiag", "srip", "spectral", "group_lasso", "hoyer", "max_norm")
POWER = ("srip", "spectral")  # computed with power iterations (vector under stop_gradient)
EXACT = tuple(name for name in OWN if name not in POWER)
KERAS = ("keras_l1", "keras_l2", "keras_l1l2", "keras_orthogonal")
ALL = OWN + KERAS

# Non-default parameters (the scale is passed separately).
PARAMS = {
    "elastic": {"l1": 0.3, "l2": 0.7},
    "orthogonal_offdiag": {},
    "srip": {"iterations": 100},
    "spectral": {"iterations": 100},
    "group_lasso": {},
    "hoyer": {},
    "max_norm": {"max_value": 1.25},
    "keras_l1": {"l1": 0.03},
    "keras_l2": {"l2": 0.02},
    "keras_l1l2": {"l1": 0.03, "l2": 0.02},
    "keras_orthogonal": {"factor": 0.05, "mode": "columns"},
}

SHAPES = [(4, 9), (9, 4), (3, 3, 2, 5)]
SHAPE_IDS = ["wide", "tall", "conv4d"]

# The smoothing of regfw's norms, as documented: `sqrt(s + eps) - sqrt(eps)` with eps = 1e-12.
DOC_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Independent numpy references (float64).
# --------------------------------------------------------------------------------------------


def reference(name, w, scale, params):
    return scale * NP_REF[name](w, **params)


def np_srip_smoothed(w):
    """sigma_max(G - I) with the documented smoothing of the final norm, sqrt(s + eps) - sqrt(eps)."""
    return math.sqrt(np_srip(w) ** 2 + DOC_EPS) - math.sqrt(DOC_EPS)


# The power-iteration penalties' formulas as computed, to float64 rounding: srip's final norm is
# smoothed like every norm in the catalogue; spectral returns the squared norm, unsmoothed.
SMOOTHED = {"srip": np_srip_smoothed, "spectral": np_spectral}


def smoothing_bound(name, w, scale, params):
    """Largest |regfw - formula| that the documented norm smoothing allows (0 if none applies).

    `sqrt(s + eps) - sqrt(eps)` is within sqrt(eps) = 1e-6 below sqrt(s) for every s >= 0. So
    group_lasso may lose up to 1e-6 per column, and max_norm's `relu(n - max)^2` up to
    `2e-6 relu(n - max) + 1e-12` per column.
    """
    delta = math.sqrt(DOC_EPS)
    norms = np.linalg.norm(as_matrix(w), axis=0)
    if name == "group_lasso":
        return scale * delta * len(norms)
    if name == "max_norm":
        excess = np.maximum(norms - params["max_value"], 0.0)
        return scale * float(np.sum(2 * delta * excess + delta**2))
    return 0.0


# --------------------------------------------------------------------------------------------
# Helpers (same conventions as tests/test_penalties.py).
# --------------------------------------------------------------------------------------------


def exact(w):
    """`w` as a float64 keras.Variable."""
    return keras.Variable(np.asarray(w, dtype=np.float64), dtype="float64")


def column_scaled(shape, seed, targets):
    """Random weights whose columns W[:, j] have exactly the L2 norms `targets`."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(math.prod(shape[:-1]), shape[-1]))
    m = m / np.linalg.norm(m, axis=0) * np.asarray(targets, dtype=np.float64)
    return m.reshape(shape)


def max_norm_targets(n, max_value):
    """Column norms alternating clearly below and clearly above `max_value`."""
    return [max_value * (0.3 + 0.05 * j if j % 2 == 0 else 1.3 + 0.15 * j) for j in range(n)]


def catalogue_weights(name, shape, seed=None):
    """Seeded float64 weights for `name`, away from its kinks.

    elastic and hoyer are kinked where an entry is 0; max_norm where a column norm equals
    max_value (some columns are above it, some below); the others are smooth at generic weights.
    """
    seed = stable_seed(name, shape) if seed is None else seed
    if name == "max_norm":
        return column_scaled(shape, seed, max_norm_targets(shape[-1], 1.25))
    w = np.random.default_rng(seed).normal(0.0, 0.8, size=shape)
    return away_from(w, [0.0])


def tape_gradient(penalty, w, dtype="float64"):
    var = tf.Variable(np.asarray(w), dtype=dtype)
    with tf.GradientTape() as tape:
        out = penalty(var)
    return out, tape.gradient(out, var)


def relative_error(got, expected):
    return abs(float(got) - expected) / abs(expected)


# --------------------------------------------------------------------------------------------
# 1. Values against numpy.
# --------------------------------------------------------------------------------------------


def test_max_norm_weights_straddle_max_value():
    # Guard for the max_norm tests: some columns exceed max_value, some do not, none is near it.
    for shape in SHAPES:
        norms = np.linalg.norm(as_matrix(catalogue_weights("max_norm", shape)), axis=0)
        assert (norms > 1.25).sum() >= 2 and (norms < 1.25).sum() >= 2
        assert np.min(np.abs(norms - 1.25)) > 0.25
        assert np_max_norm(catalogue_weights("max_norm", shape), 1.25) > 0.1


def test_smooth_weights_avoid_zero():
    for name in ("elastic", "hoyer"):
        for shape in SHAPES:
            assert np.min(np.abs(catalogue_weights(name, shape))) > 0.05


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", EXACT)
def test_exact_value_matches_numpy(name, shape):
    w = catalogue_weights(name, shape)
    scale = 0.375  # exact in binary, non-default for all of them
    params = PARAMS[name]
    out = penalties.get(name, scale=scale, **params)(exact(w))
    assert dtype_of(out) == "float64"
    assert tuple(out.shape) == ()
    expected = reference(name, w, scale, params)
    assert expected > 0.1
    # atol is 0 except for group_lasso/max_norm, where it is the documented smoothing's bound
    # (about 1e-6 * scale per column, see smoothing_bound); everything else must hold to 1e-9.
    atol = smoothing_bound(name, w, scale, params)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", ["group_lasso", "max_norm"])
def test_column_norms_are_the_documented_smoothed_norms(name, shape):
    # The docstrings say the norm is sqrt(s + eps) - sqrt(eps): to 1e-12 that is what we get.
    w = catalogue_weights(name, shape)
    params = PARAMS[name]
    s = np.sum(as_matrix(w) ** 2, axis=0)
    norms = np.sqrt(s + DOC_EPS) - np.sqrt(DOC_EPS)
    if name == "group_lasso":
        expected = np.sum(norms)
    else:
        expected = np.sum(np.maximum(norms - params["max_value"], 0.0) ** 2)
    out = penalties.get(name, scale=1.0, **params)(exact(w))
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-12)


def test_orthogonal_offdiag_ignores_column_norms():
    # Orthogonal columns of any norms cost nothing; one correlated pair costs 2 * (dot)^2.
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 3)))
    w = q * np.array([0.5, 2.0, 7.0])
    p = penalties.get("orthogonal_offdiag", scale=1.0)
    assert abs(float(to_numpy(p(exact(w))))) < 1e-12
    w2 = w.copy()
    w2[:, 2] += 0.1 * w[:, 0]  # <w0, w2> = 0.1 * 0.25
    np.testing.assert_allclose(to_numpy(p(exact(w2))), 2 * 0.025**2, rtol=1e-9)


def test_hoyer_is_scale_invariant():
    w = catalogue_weights("hoyer", (4, 9))
    p = penalties.get("hoyer", scale=1.0)
    np.testing.assert_allclose(to_numpy(p(exact(3.0 * w))), np_hoyer(w), rtol=1e-9)
    np.testing.assert_allclose(to_numpy(p(exact(w))), np_hoyer(w), rtol=1e-9)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", POWER)
def test_power_iteration_value_matches_numpy(name, shape):
    w = catalogue_weights(name, shape)
    scale = 0.375
    params = PARAMS[name]  # iterations=100 (per step; on its own it iterates START_ITERATIONS)
    out = penalties.get(name, scale=scale, **params)(exact(w))
    assert dtype_of(out) == "float64"
    expected = scale * SMOOTHED[name](w)
    # Measured: at most 8.6e-16 (spectral) and 1.6e-16 (srip, against its smoothed norm).
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-13)
    # A unit (or shorter) vector never overshoots the top singular value.
    assert float(to_numpy(out)) <= expected * (1 + 1e-13)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", POWER)
def test_power_iteration_defaults(name, shape):
    # 1 warm-started block iteration per step (tested below and in test_correctness.py); a penalty
    # called on its own iterates START_ITERATIONS = 100 times from a fixed start.
    w = catalogue_weights(name, shape)
    p = penalties.get(name, scale=1.0)
    assert p.get_config()["iterations"] == 1 and p.START_ITERATIONS == 100
    err = relative_error(to_numpy(p(exact(w))), SMOOTHED[name](w))
    assert err < 1e-13, f"{name} {shape}: relative error {err:.3g}"  # measured <= 8.6e-16


@pytest.mark.parametrize("wide", [True, False], ids=["wide", "tall"])
def test_srip_uses_the_smaller_gram_matrix(wide):
    # Orthogonal rows (wide) or columns (tall) of norms 0.9 .. 1.1: the smaller Gram matrix is
    # diag(0.81, 0.9025, 1.1025, 1.21), so sigma_max(G - I) = 0.21. The larger Gram matrix of a
    # wide W would have n - m extra eigenvalues -1 and give 1 instead.
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(9, 4)))
    tall = q * np.array([0.9, 0.95, 1.05, 1.1])
    w = tall.T if wide else tall
    assert np_srip(w) == pytest.approx(0.21, rel=1e-9)
    out = penalties.get("srip", scale=1.0, iterations=100)(exact(w))
    smoothed = math.sqrt(0.21**2 + DOC_EPS) - math.sqrt(DOC_EPS)  # the documented smoothing
    np.testing.assert_allclose(to_numpy(out), smoothed, rtol=1e-13)  # measured 1.3e-15


@pytest.mark.parametrize("c", [1e-2, 1e-3, 1e-4])
def test_spectral_is_homogeneous_for_small_weights(c):
    # sigma_max(c W)^2 = c^2 sigma_max(W)^2. With sigma_max(c W) ~ 3e-3 or ~3e-4 the power
    # iteration's normalization guard (sqrt(|v|^2 + 1e-12)) no longer normalizes.
    w = catalogue_weights("spectral", (9, 4))
    out = penalties.get("spectral", scale=1.0, iterations=100)(exact(c * w))
    np.testing.assert_allclose(to_numpy(out), np_spectral(c * w), rtol=1e-13)  # measured 8e-16


@pytest.mark.parametrize("distance", [1e-2, 1e-3, 1e-4])
def test_srip_near_orthonormal_columns(distance):
    # A tall W at `distance` from orthonormal columns: sigma_max(W^T W - I) is about 4 * distance.
    # SRIP must still see it (value and gradient) while it is far above float64 resolution.
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(9, 4)))
    w = q + distance * rng.normal(size=q.shape)
    p = penalties.get("srip", scale=1.0, iterations=100)
    out, grad = tape_gradient(p, w)
    # Against the documented smoothed norm: measured within 1.3e-14 (distance 1e-4).
    np.testing.assert_allclose(to_numpy(out), SMOOTHED["srip"](w), rtol=1e-12)
    fd = numeric_gradient(SMOOTHED["srip"], w)
    # Central differences with step 1e-6 on a value of about 4 * distance: measured within
    # 5.3e-6 of the largest entry at distance 1e-4 (5.3e-8 at 1e-3).
    np.testing.assert_allclose(grad.numpy(), fd, rtol=0, atol=5e-5 * np.max(np.abs(fd)))


# Power iteration against a NumPy block iteration, on spectra where it converges slowly.


def hard_weights(name, shape, seed=3):
    """Weights whose top singular values (spectral) or |eigenvalues of G - I| (srip) are close.

    spectral: singular values 1, 0.99, 0.98, ...; srip: G - I has eigenvalues 0.5, -0.49, 0.48,
    -0.47, ... Block power iteration (block of 4) then needs about 100 iterations to reach float64
    accuracy, so 50 iterations or a cold start show.
    """
    rng = np.random.default_rng(seed)
    m, n = math.prod(shape[:-1]), shape[-1]
    p = min(m, n)
    u = np.linalg.qr(rng.normal(size=(m, p)))[0]
    v = np.linalg.qr(rng.normal(size=(n, p)))[0]
    if name == "spectral":
        s = 1.0 - 0.01 * np.arange(p)
    else:
        d = 0.5 - 0.01 * np.arange(p)
        d[1::2] *= -1
        s = np.sqrt(1.0 + d)
    return ((u * s) @ v.T).reshape(shape)


def np_operator(name, w):
    """The symmetric PSD matrix whose top eigenvector the penalty looks for (float64)."""
    m = as_matrix(w)
    if name == "spectral":
        tall = m if m.shape[0] >= m.shape[1] else m.T
        return tall.T @ tall
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    deviation = gram - np.eye(len(gram))
    return deviation @ deviation


def np_block_iterate(op, block, iterations):
    """`iterations` block power iterations (QR) from `block`, then the Rayleigh-Ritz rotation."""
    for _ in range(iterations):
        block = np.linalg.qr(op @ block)[0]
    _, vectors = np.linalg.eigh(block.T @ op @ block)
    return block @ vectors[:, ::-1]


def np_value_at(name, w, vector):
    """The penalty given the operator's (estimated) top eigenvector, as the docstrings state."""
    m = as_matrix(w)
    if name == "spectral":
        tall = m if m.shape[0] >= m.shape[1] else m.T
        return float(np.sum((tall @ vector) ** 2))
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    squares = np.sum(((gram - np.eye(len(gram))) @ vector) ** 2)
    return math.sqrt(squares + DOC_EPS) - math.sqrt(DOC_EPS)


def fixed_start(size, width):
    """The documented fixed start: a seeded (rng 0) Gaussian block, orthonormalized."""
    return np.linalg.qr(np.random.default_rng(0).standard_normal((size, width)))[0]


HARD_SHAPES = [(12, 8), (8, 12), (3, 3, 2, 8)]


@pytest.mark.parametrize("shape", HARD_SHAPES, ids=["tall", "wide", "conv4d"])
@pytest.mark.parametrize("name", POWER)
def test_power_iteration_on_its_own_iterates_100_times_from_a_fixed_start(name, shape):
    w = hard_weights(name, shape)
    op = np_operator(name, w)
    start = fixed_start(len(op), 4)
    exact_value = np_value_at(name, w, np.linalg.eigh(op)[1][:, -1:])
    after = {k: np_value_at(name, w, np_block_iterate(op, start, k)[:, :1]) for k in (50, 100)}
    got = float(to_numpy(penalties.get(name, scale=1.0)(exact(w))))
    rtol = 1e-13  # measured: within 1.1e-15 of 100 NumPy iterations
    assert got == pytest.approx(after[100], rel=rtol)
    # Guard: these spectra converge slowly enough that 50 iterations are far off (measured:
    # 6e-9 to 2.6e-4 from the exact value), and 100 are not yet exact for spectral.
    assert abs(after[50] - after[100]) > 1e3 * rtol * after[100]
    assert got <= exact_value * (1 + rtol)


@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("name", POWER)
def test_power_iteration_step_warm_starts_from_the_stored_block_and_stores_it(name, iterations):
    # What a training step does with a weight's persistent block: `iterations` block iterations
    # from the stored block (not from the fixed start), then it stores the new block.
    w = hard_weights(name, (12, 8))
    op = np_operator(name, w)
    block = np.linalg.qr(np.random.default_rng(7).normal(size=(8, 4)))[0]  # not the fixed start
    state = keras.Variable(block, dtype="float64")
    p = penalties.get(name, scale=0.5, iterations=iterations)
    values = []
    for _ in range(4):
        got = float(to_numpy(p.step(exact(w), state)))
        block = np_block_iterate(op, block, iterations)
        values.append(0.5 * np_value_at(name, w, block[:, :1]))
        assert got == pytest.approx(values[-1], rel=1e-12)  # measured within 1e-15
        # The stored block is NumPy's, column by column (up to each column's sign).
        overlaps = np.abs(np.sum(to_numpy(state) * block, axis=0))
        np.testing.assert_allclose(overlaps, 1.0, atol=1e-9)
    assert len(set(values)) == 4  # every step moved the estimate: the steps are distinguishable
    # `estimate` (what is logged) does the same iterations from the block but stores nothing.
    stored = to_numpy(state).copy()
    logged = float(to_numpy(p.estimate(exact(w), state)))
    expected = 0.5 * np_value_at(name, w, np_block_iterate(op, block, iterations)[:, :1])
    assert logged == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(to_numpy(state), stored)


# --------------------------------------------------------------------------------------------
# 2. Gradients against central differences.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", EXACT)
def test_exact_gradient_matches_finite_differences(name, shape):
    w = catalogue_weights(name, shape, seed=stable_seed("grad", name, shape))
    scale = 0.5
    params = PARAMS[name]
    out, grad = tape_gradient(penalties.get(name, scale=scale, **params), w)
    assert grad is not None
    assert dtype_of(out) == "float64" and grad.dtype == tf.float64
    expected = numeric_gradient(lambda x: reference(name, x, scale, params), w)
    assert np.max(np.abs(expected)) > 1e-2
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", POWER)
def test_power_iteration_gradient_matches_finite_differences(name, shape):
    # The vector is under stop_gradient, but at the converged (top singular) vector the gradient
    # equals that of the true sigma: compare with central differences of the numpy formula.
    w = catalogue_weights(name, shape, seed=stable_seed("grad", name, shape))
    scale = 0.5
    out, grad = tape_gradient(penalties.get(name, scale=scale, iterations=200), w)
    assert grad is not None
    assert dtype_of(out) == "float64" and grad.dtype == tf.float64
    expected = numeric_gradient(lambda x: scale * NP_REF[name](x), w)
    # Central differences (step 1e-6): measured within 5.6e-9 of the largest entry.
    np.testing.assert_allclose(grad.numpy(), expected, rtol=0, atol=1e-7 * np.max(np.abs(expected)))


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_spectral_gradient_is_two_sigma_u_v(shape):
    # d sigma^2 / dW = 2 sigma u v^T (u, v the top singular vectors of W), reshaped back.
    w = catalogue_weights("spectral", shape, seed=stable_seed("grad", "spectral", shape))
    u, s, vt = np.linalg.svd(as_matrix(w))
    expected = (2 * s[0] * np.outer(u[:, 0], vt[0])).reshape(shape)
    _, grad = tape_gradient(penalties.get("spectral", scale=1.0, iterations=200), w)
    # Measured within 7e-15 of the largest entry.
    np.testing.assert_allclose(
        grad.numpy(), expected, rtol=0, atol=1e-12 * np.max(np.abs(expected))
    )


# --------------------------------------------------------------------------------------------
# 3. All-zero weights.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", ALL)
def test_zero_weights_finite_value_and_gradient(name, shape, dtype):
    scale = 0.5
    out, grad = tape_gradient(
        penalties.get(name, scale=scale, **PARAMS[name]), np.zeros(shape), dtype
    )
    value = float(to_numpy(out))
    assert math.isfinite(value)
    if name == "srip":
        # G - I = -I, whose largest singular value is 1 (less the documented 1e-6 offset).
        np.testing.assert_allclose(value, scale * 1.0, rtol=1e-5)
    else:
        assert value == 0.0
    assert grad is not None
    assert np.all(np.isfinite(grad.numpy()))


# --------------------------------------------------------------------------------------------
# 4. Low-precision weights.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ALL)
def test_low_precision_weights_give_float32(name, dtype):
    shape = (3, 3, 2, 5)
    w = catalogue_weights(name, shape)
    var = keras.Variable(w.astype(np.float32), dtype=dtype, trainable=True)
    assert str(var.dtype) == dtype
    rounded = to_numpy(keras.ops.cast(var, "float32")).astype(np.float64)
    assert not np.array_equal(rounded, w)  # rounding did happen

    scale = 0.375
    params = PARAMS[name]
    p = penalties.get(name, scale=scale, **params)
    out = p(var)
    assert dtype_of(out) == "float32"
    out32 = p(keras.ops.convert_to_tensor(rounded.astype(np.float32)))
    assert dtype_of(out32) == "float32"
    # Computed in float32 on the same (rounded) numbers: bit-identical, as measured.
    assert to_numpy(out) == to_numpy(out32)
    # float32 rounding: measured within 2.9e-7 of the formula, beyond the documented smoothing of
    # the norms (group_lasso, max_norm, srip); rtol 2e-6 leaves a margin of about 7.
    expected = reference(name, rounded, scale, params)
    atol = smoothing_bound(name, rounded, scale, params)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=2e-6, atol=atol)


def test_orthogonal_offdiag_float32_wide_matrix_no_cancellation():
    # Wide W in float32 (what float16/bfloat16 weights are computed in): two large orthogonal
    # columns and a small one. Off-diagonal Gram entries are 300 * 0.01 = 3 twice, so the penalty
    # is 2 * (3^2 + 3^2) = 36, while ||W W^T||_F^2 is about 1.6e10: computing it as a
    # difference of the two (the wide-matrix shortcut) loses it entirely in float32.
    w = np.array([[300.0, 0.0, 0.01], [0.0, 300.0, 0.01]], dtype=np.float32)
    assert np_orthogonal_offdiag(w.astype(np.float64)) == pytest.approx(36.0, rel=1e-6)
    p = penalties.get("orthogonal_offdiag", scale=1.0)
    for x in (keras.Variable(w, dtype="float32"), keras.Variable(w, dtype="float16")):
        value = float(to_numpy(p(x)))
        assert value >= 0.0, f"a sum of squares came out negative: {value}"
        np.testing.assert_allclose(value, np_orthogonal_offdiag(to_numpy(x)), rtol=1e-3)


# --------------------------------------------------------------------------------------------
# 5. Keras's own regularizers.
# --------------------------------------------------------------------------------------------

KERAS_FACTORIES = {
    "keras_l1": lambda p: keras.regularizers.L1(**p),
    "keras_l2": lambda p: keras.regularizers.L2(**p),
    "keras_l1l2": lambda p: keras.regularizers.L1L2(**p),
    "keras_orthogonal": lambda p: keras.regularizers.OrthogonalRegularizer(**p),
}

KERAS_CASES = [
    ("keras_l1", {"l1": 0.03}),
    ("keras_l2", {"l2": 0.02}),
    ("keras_l1l2", {"l1": 0.03, "l2": 0.02}),
    ("keras_orthogonal", {"factor": 0.05, "mode": "rows"}),
    ("keras_orthogonal", {"factor": 0.05, "mode": "columns"}),
]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(("name", "params"), KERAS_CASES, ids=lambda x: str(x))
def test_keras_penalties_match_keras_and_numpy(name, params, shape):
    w = catalogue_weights(name, shape)
    scale = 1.5
    got = penalties.get(name, scale=scale, **params)(exact(w))
    assert dtype_of(got) == "float32"  # Keras's regularizers compute in float32
    w32 = keras.ops.convert_to_tensor(w.astype(np.float32))
    direct = KERAS_FACTORIES[name](params)(
        keras.ops.reshape(w32, (-1, shape[-1])) if name == "keras_orthogonal" else w32
    )
    np.testing.assert_allclose(to_numpy(got), scale * float(to_numpy(direct)), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(got), reference(name, w, scale, params), rtol=1e-5)


def test_keras_defaults():
    assert penalties.get("keras_l1").get_config() == {"scale": 1.0, "l1": 0.01}
    assert penalties.get("keras_l2").get_config() == {"scale": 1.0, "l2": 0.01}
    assert penalties.get("keras_l1l2").get_config() == {"scale": 1.0, "l1": 0.01, "l2": 0.01}
    assert penalties.get("keras_orthogonal").get_config() == {
        "scale": 1.0,
        "factor": 0.01,
        "mode": "rows",
    }


@pytest.mark.parametrize("mode", ["rows", "columns"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_keras_orthogonal_differs_from_orthogonal(shape, mode):
    w = catalogue_weights("keras_orthogonal", shape)
    keras_value = float(
        to_numpy(penalties.get("keras_orthogonal", factor=1.0, mode=mode)(exact(w)))
    )
    ours = float(to_numpy(penalties.get("orthogonal", scale=1.0)(exact(w))))
    # Mean |cosine| is in [0, 1]; ||W^T W - I||_F^2 is not bounded and here much larger.
    assert 0.0 < keras_value <= 1.0
    assert abs(keras_value - ours) > 0.5 * max(keras_value, ours)


# --------------------------------------------------------------------------------------------
# 6. Registry: names, config round trip, docstrings.
# --------------------------------------------------------------------------------------------

# A piece of each penalty's formula, as its class docstring must state it.
FORMULAS = {
    "clip": "sum((w - clip(w, lower, upper))^2)",
    "l1": "alpha * sum(|w|)",
    "l2": "sum(w^2)",
    "orthogonal": "||W^T W - I||_F^2",
    "elastic": "l1 * sum(|w|) + l2 * sum(w^2)",
    "orthogonal_offdiag": "||(W^T W) * (1 - I)||_F^2",
    "srip": "sigma_max(G - I)",
    "spectral": "sigma_max(W)^2",
    "group_lasso": "sum_j ||W[:, j]||_2",
    "hoyer": "sum(|w|) / ||w||_2",
    "max_norm": "sum_j relu(||W[:, j]||_2 - max_value)^2",
    "keras_l1": "l1 * sum(|w|)",
    "keras_l2": "l2 * sum(w^2)",
    "keras_l1l2": "l1 * sum(|w|) + l2 * sum(w^2)",
    "keras_orthogonal": "mean absolute cosine",
}


def test_every_catalogue_name_is_available():
    names = penalties.available()
    assert set(FORMULAS) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_registered_class_docstring_states_formula(name):
    p = penalties.get(name)
    assert isinstance(p, penalties.Penalty)
    assert p.name == name
    doc = type(p).__doc__
    assert doc and doc.strip()
    assert FORMULAS[name] in doc


@pytest.mark.parametrize("name", ALL)
def test_get_config_round_trip(name):
    p = penalties.get(name, scale=0.375, **PARAMS[name])
    config = p.get_config()
    assert config == {"scale": 0.375, **PARAMS[name]}
    clone = type(p)(**config)
    assert type(clone) is type(p)
    assert clone.get_config() == config
    w = exact(catalogue_weights(name, (4, 9)))
    np.testing.assert_allclose(to_numpy(clone(w)), to_numpy(p(w)), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_defaults_differ_from_test_params(name):
    # Guard: the tests above give every parameter a penalty has (besides its scale) a value other
    # than its default, so a wrong default or a parameter that is ignored shows; a penalty
    # without parameters (orthogonal_offdiag, group_lasso, hoyer) has none to vary.
    defaults = penalties.get(name).get_config()
    assert set(PARAMS[name]) == set(defaults) - {"scale"}
    for key, value in PARAMS[name].items():
        assert defaults[key] != value, key


# --------------------------------------------------------------------------------------------
# 7. Combined.
# --------------------------------------------------------------------------------------------

PAIRS = [
    ("elastic", "group_lasso"),
    ("spectral", "hoyer"),
    ("srip", "max_norm"),
    ("orthogonal_offdiag", "keras_orthogonal"),
    ("keras_l1", "l2"),
]


def part_tolerance(name, w, scale, params, dtype):
    """How far one part may be from its float64 formula: rounding plus documented smoothing."""
    float64 = dtype == "float64" and not name.startswith("keras_")  # Keras's compute in float32
    # Measured: 1.6e-10 (float64) and 9.1e-7 (float32) relative, beyond the smoothing.
    rtol = 1e-9 if float64 else 2e-6
    smoothing = smoothing_bound(name, w, scale, params) + (scale * 1e-6 if name == "srip" else 0)
    return rtol * abs(reference(name, w, scale, params)) + smoothing


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("first", "second"), PAIRS, ids=lambda x: str(x))
def test_combined_is_the_sum(first, second, dtype):
    w = catalogue_weights("max_norm", (3, 3, 2, 5))  # nonzero, with columns above 1.25
    x = keras.Variable(w.astype(dtype), dtype=dtype)
    stored = w.astype(dtype).astype(np.float64)  # the weights as the penalty sees them
    parts = [(first, 0.375, PARAMS.get(first, {})), (second, 0.5, PARAMS.get(second, {}))]
    a, b = (penalties.get(name, scale=scale, **params) for name, scale, params in parts)
    # The NumPy formulas of both parts, never the penalties themselves.
    values = [reference(name, stored, scale, params) for name, scale, params in parts]
    tolerance = sum(part_tolerance(name, stored, *rest, dtype) for name, *rest in parts)
    assert min(values) > 100 * tolerance  # either part doubled or dropped would show
    got = penalties.Combined([a, b])(x)
    assert tuple(got.shape) == ()
    assert abs(float(to_numpy(got)) - sum(values)) <= tolerance
    # And a single part is that part.
    single = float(to_numpy(penalties.Combined([a])(x)))
    assert abs(single - values[0]) <= part_tolerance(first, stored, 0.375, parts[0][2], dtype)
