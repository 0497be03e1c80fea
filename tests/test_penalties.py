"""Tests for regfw.penalties: values and gradients against independent numpy formulas.

Every expected number here is computed in numpy (float64) from the formulas of the article
(clip, l1, orthogonal) or the docstrings (l2), never with the code under test.
"""

from __future__ import annotations

import math
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

from regfw import penalties
from regfw.registry import UnknownNameError
from tests.penalty_helpers import (
    NP_REF,
    away_from,
    dtype_of,
    np_clip,
    np_l2,
    np_orthogonal,
    numeric_gradient,
    stable_seed,
    to_numpy,
)

BUILTIN = ("clip", "l1", "l2", "orthogonal")

# Non-default parameters for each built-in penalty (the scale is passed separately).
PARAMS = {
    "clip": {"lower": -0.3, "upper": 0.2},
    "l1": {"alpha": 0.7},
    "l2": {},
    "orthogonal": {},
}

# The built-in defaults of the same parameters.
DEFAULT_PARAMS = {
    "clip": {"lower": -1.0, "upper": 1.0},
    "l1": {"alpha": 0.1},
    "l2": {},
    "orthogonal": {},
}

SHAPES = [(7, 3), (3, 7), (5, 5), (3, 3, 2, 4)]
SHAPE_IDS = ["tall", "wide", "square", "conv4d"]


# --------------------------------------------------------------------------------------------
# Independent numpy references (float64).
# --------------------------------------------------------------------------------------------


def reference(name, w, scale, params):
    return scale * NP_REF[name](w, **params)


def make_input(w, kind, dtype="float64"):
    """`w` as a backend tensor (keras.ops.convert_to_tensor) or as a keras.Variable."""
    w = np.asarray(w).astype(dtype)
    if kind == "tensor":
        return keras.ops.convert_to_tensor(w)
    if kind == "variable":
        return keras.Variable(w, dtype=dtype)
    raise ValueError(kind)


def exact(w):
    """`w` as a float64 keras.Variable: the input kind whose dtype regfw reads correctly.

    Tests of other features use it so that a dtype-handling bug for raw tensors (tested on its
    own below) does not hide what they check.
    """
    return make_input(w, "variable")


INPUT_KINDS = ["tensor", "variable"]


def random_weights(shape, seed, spread=1.5):
    """Normal weights with a large enough spread that clip(-0.3, 0.2) really clips."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, spread, size=shape)


def smooth_weights(shape, seed):
    """Random float64 weights away from the kinks of l1 (0) and clip (-0.3, 0.2, -1, 1)."""
    w = random_weights(shape, seed, spread=1.0)
    w = away_from(w, [0.0, -0.3, 0.2, -1.0, 1.0])
    # A second pass in case one shift landed near another point.
    return away_from(w, [0.0, -0.3, 0.2, -1.0, 1.0])


# --------------------------------------------------------------------------------------------
# 1. Values against numpy.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", BUILTIN)
def test_value_float64_matches_numpy(name, shape, kind):
    w = random_weights(shape, seed=stable_seed(name, shape))
    # 0.375 is exact in float32, so the scale does not lose anything in float64 arithmetic.
    scale = 0.375
    params = PARAMS[name]
    out = penalties.get(name, scale=scale, **params)(make_input(w, kind))
    # regfw keeps float64 weights in float64.
    assert dtype_of(out) == "float64"
    assert tuple(out.shape) == ()
    np.testing.assert_allclose(to_numpy(out), reference(name, w, scale, params), rtol=1e-12)


def test_clip_weights_really_clip():
    # Guard for the value tests: the random weights reach beyond both clip bounds.
    for shape in SHAPES:
        w = random_weights(shape, seed=stable_seed("clip", shape))
        assert (w < -0.3).sum() > 0 and (w > 0.2).sum() > 0
        assert np_clip(w, -0.3, 0.2) > 0.1


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", BUILTIN)
def test_value_float32_matches_numpy(name, shape, kind):
    w = random_weights(shape, seed=stable_seed(name, shape, 1)).astype(np.float32)
    scale = 0.37
    params = PARAMS[name]
    out = penalties.get(name, scale=scale, **params)(make_input(w, kind, "float32"))
    assert dtype_of(out) == "float32"
    np.testing.assert_allclose(
        to_numpy(out), reference(name, w.astype(np.float64), scale, params), rtol=1e-5
    )


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("name", BUILTIN)
def test_value_float64_keeps_full_precision_of_scale(name, kind):
    # float64 weights are computed in float64, so `scale * value` should be exact to float64
    # precision for any Python-float scale, not only for float32-representable ones.
    w = random_weights((5, 4), seed=11)
    scale = 0.01  # not representable in float32 (rounds to 0.009999999776...)
    params = PARAMS[name]
    out = penalties.get(name, scale=scale, **params)(make_input(w, kind))
    np.testing.assert_allclose(to_numpy(out), reference(name, w, scale, params), rtol=1e-12)


def test_orthogonal_zero_only_for_orthonormal_columns():
    # Tall matrix with orthonormal columns: penalty 0. Its transpose (wide) is not: n - m left.
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(7, 3)))
    p = penalties.get("orthogonal", scale=1.0)
    assert abs(float(to_numpy(p(exact(q))))) < 1e-12
    np.testing.assert_allclose(to_numpy(p(exact(q.T))), 4.0, rtol=1e-12)
    np.testing.assert_allclose(np_orthogonal(q.T), 4.0, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# 2. Gradients against central differences of the numpy reference.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tf_variable", "keras_variable"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 5), (3, 3, 2, 2)], ids=["tall", "wide", "conv4d"])
@pytest.mark.parametrize("name", BUILTIN)
def test_gradient_matches_finite_differences(name, shape, kind):
    w = smooth_weights(shape, seed=7 + len(shape) + shape[-1])
    scale = 0.5
    params = PARAMS[name]
    penalty = penalties.get(name, scale=scale, **params)

    if kind == "tf_variable":
        var = tf.Variable(w, dtype=tf.float64)
    else:
        var = keras.Variable(w, dtype="float64")
    with tf.GradientTape() as tape:
        out = penalty(var)
    grad = tape.gradient(out, var)
    assert grad is not None

    expected = numeric_gradient(lambda x: reference(name, x, scale, params), w)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-6, atol=1e-8)
    assert dtype_of(grad) == "float64"
    assert dtype_of(out) == "float64"  # computed in float64, not float32


def test_gradient_weights_avoid_kinks():
    for shape in [(4, 3), (2, 5), (3, 3, 2, 2)]:
        w = smooth_weights(shape, seed=7 + len(shape) + shape[-1])
        for p in [0.0, -0.3, 0.2, -1.0, 1.0]:
            assert np.min(np.abs(w - p)) > 1e-3


# --------------------------------------------------------------------------------------------
# 3. The article's defaults and its training-loss loop.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scale", "params"),
    [
        ("clip", 0.01, {"lower": -1.0, "upper": 1.0}),
        ("l1", 0.001, {"alpha": 0.1}),
        ("orthogonal", 1e-4, {}),
    ],
)
def test_article_defaults(name, scale, params):
    p = penalties.get(name)
    assert p.scale == scale
    assert p.params == params
    assert p.get_config() == {"scale": scale, **params}


def _article_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    # Larger weights than glorot gives, so that the clipping penalty is not trivially 0.
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(0.0, 1.2, size=w.shape) for w in model.get_weights()])
    return model


def test_article_loop_totals():
    model = _article_model()
    weights = [np.asarray(w.numpy(), dtype=np.float64) for w in model.trainable_weights]
    assert [w.ndim for w in weights] == [2, 1, 2, 1]

    # The article's three custom losses, in numpy, exactly as its loops are written.
    def clip_loop():
        total = 0.0
        for w in weights:
            clipped = np.clip(w, -1.0, 1.0)
            total += np.sum(np.square(w - clipped))
        return 0.01 * total

    def sparsity_loop():
        total = 0.0
        for w in weights:
            total += np.sum(0.1 * np.abs(w))
        return 0.001 * total

    def orthogonality_loop():
        total = 0.0
        for w in weights:
            if len(w.shape) > 1:
                n = w.shape[1]
                total += np.sum(np.square(np.dot(w.T, w) - np.eye(n)))
        return 0.0001 * total

    clip, l1, orth = penalties.get("clip"), penalties.get("l1"), penalties.get("orthogonal")
    got_clip = sum(float(to_numpy(clip(w))) for w in model.trainable_weights)
    got_l1 = sum(float(to_numpy(l1(w))) for w in model.trainable_weights)
    got_orth = sum(float(to_numpy(orth(w))) for w in model.trainable_weights if len(w.shape) > 1)

    assert clip_loop() > 0.0  # the weights do reach outside [-1, 1]
    np.testing.assert_allclose(got_clip, clip_loop(), rtol=1e-5)
    np.testing.assert_allclose(got_l1, sparsity_loop(), rtol=1e-5)
    np.testing.assert_allclose(got_orth, orthogonality_loop(), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 4. get_config round trip.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scale", "params"),
    [
        ("clip", 0.01, {"lower": -0.3, "upper": 0.2}),
        ("l1", 0.001, {"alpha": 0.7}),
        ("l2", 0.1, {}),
        ("orthogonal", 1e-4, {}),
        ("clip", 3, {}),
    ],
)
def test_get_config_round_trip(name, scale, params):
    p = penalties.get(name, scale=scale, **params)
    config = p.get_config()
    assert type(config["scale"]) is float
    assert config["scale"] == float(scale)  # exactly the Python float given, not float32
    assert p.scale == float(scale)
    for key, value in params.items():
        assert config[key] == value
    clone = type(p).from_config(config)
    assert type(clone) is type(p)
    assert clone.get_config() == config
    w = exact(random_weights((4, 3), seed=2))
    np.testing.assert_allclose(to_numpy(clone(w)), to_numpy(p(w)), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# 5. Scales.
# --------------------------------------------------------------------------------------------

BAD_SCALES = [-1.0, -1e-12, float("nan"), float("inf"), float("-inf"), True, False, "0.1", None]


@pytest.mark.parametrize("name", BUILTIN)
def test_set_scale_changes_value(name):
    w = random_weights((5, 3), seed=4)
    params = PARAMS[name]
    p = penalties.get(name, scale=1.0, **params)
    x = exact(w)
    np.testing.assert_allclose(to_numpy(p(x)), reference(name, w, 1.0, params), rtol=1e-12)

    p.set_scale(2.5)
    assert p.scale == 2.5
    np.testing.assert_allclose(to_numpy(p(x)), reference(name, w, 2.5, params), rtol=1e-12)

    p.set_scale(0)
    assert p.scale == 0.0
    assert float(to_numpy(p(x))) == 0.0


def test_set_scale_takes_effect_inside_compiled_function():
    p = penalties.get("l2", scale=1.0)
    w = tf.constant(random_weights((3, 2), seed=8), dtype=tf.float32)
    fn = tf.function(lambda x: p(x))
    first = float(fn(w).numpy())
    p.set_scale(0.5)
    second = float(fn(w).numpy())
    np.testing.assert_allclose(first, np_l2(w.numpy()), rtol=1e-5)
    np.testing.assert_allclose(second, 0.5 * np_l2(w.numpy()), rtol=1e-5)
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("bad", BAD_SCALES, ids=repr)
@pytest.mark.parametrize("name", BUILTIN)
def test_set_scale_rejects_bad_scales(name, bad):
    p = penalties.get(name, scale=0.25)
    with pytest.raises(ValueError, match="scale"):
        p.set_scale(bad)
    assert p.scale == 0.25  # unchanged after a rejected value
    w = random_weights((3, 3), seed=9)
    np.testing.assert_allclose(
        to_numpy(p(exact(w))),
        reference(name, w, 0.25, DEFAULT_PARAMS[name]),
        rtol=1e-12,
    )


@pytest.mark.parametrize("bad", BAD_SCALES, ids=repr)
@pytest.mark.parametrize("name", BUILTIN)
def test_constructor_rejects_bad_scales(name, bad):
    with pytest.raises(ValueError, match="scale"):
        penalties.get(name, scale=bad)


# --------------------------------------------------------------------------------------------
# 6. Low-precision weights.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", BUILTIN)
def test_low_precision_weights_give_float32(name, dtype):
    w = random_weights((6, 4), seed=12)
    var = keras.Variable(w.astype(np.float32), dtype=dtype, trainable=True)
    assert str(var.dtype) == dtype
    # The weights as actually stored (rounded to float16/bfloat16), widened exactly.
    rounded = to_numpy(keras.ops.cast(var, "float32")).astype(np.float64)
    assert not np.array_equal(rounded, w)  # rounding did happen

    scale = 0.375
    params = PARAMS[name]
    p = penalties.get(name, scale=scale, **params)
    out = p(var)
    assert dtype_of(out) == "float32"
    # float32 rounding: measured within 1e-7 of the formula; rtol 1e-6 leaves a margin of 10.
    np.testing.assert_allclose(to_numpy(out), reference(name, rounded, scale, params), rtol=1e-6)
    # And exactly the float32 computation on the rounded weights (bit-identical, as measured).
    out32 = p(keras.ops.convert_to_tensor(rounded.astype(np.float32)))
    assert to_numpy(out) == to_numpy(out32)


# --------------------------------------------------------------------------------------------
# 7. Registry.
# --------------------------------------------------------------------------------------------


def test_available_lists_builtins():
    names = penalties.available()
    assert set(BUILTIN) <= set(names)
    assert names == sorted(names)


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownNameError) as info:
        penalties.get("orthogonl")
    message = str(info.value)
    assert "Did you mean 'orthogonal'" in message
    for name in BUILTIN:
        assert name in message
    assert isinstance(info.value, LookupError)


def test_unknown_name_without_close_match():
    with pytest.raises(UnknownNameError) as info:
        penalties.get("zzzzzzzz")
    assert "Did you mean" not in str(info.value)


def test_unknown_parameter_raises_type_error_naming_allowed():
    with pytest.raises(TypeError) as info:
        penalties.get("clip", foo=1)
    message = str(info.value)
    assert "foo" in message
    for allowed in ("scale", "lower", "upper"):
        assert allowed in message


def test_register_function_penalty():
    name = f"quartic_{uuid.uuid4().hex}"

    @penalties.register(name)
    def quartic(w, power=4.0):
        return keras.ops.sum(keras.ops.abs(w) ** power)

    assert name in penalties.available()
    w = random_weights((4, 5), seed=13)
    x = exact(w)

    p = penalties.get(name, scale=2.0, power=2.0)
    np.testing.assert_allclose(to_numpy(p(x)), 2.0 * np.sum(w**2), rtol=1e-12)
    assert p.get_config() == {"scale": 2.0, "power": 2.0}
    assert type(p).from_config(p.get_config()).get_config() == p.get_config()

    default = penalties.get(name)  # default scale 1.0, default power 4.0
    np.testing.assert_allclose(to_numpy(default(x)), np.sum(np.abs(w) ** 4), rtol=1e-12)

    with pytest.raises(TypeError):
        penalties.get(name, exponent=3.0)


def test_register_penalty_subclass():
    name = f"linf_{uuid.uuid4().hex}"

    @penalties.register(name)
    class MaxAbs(penalties.Penalty):
        def __init__(self, scale=1.0):
            super().__init__(scale)

        def value(self, w):
            return keras.ops.max(keras.ops.abs(w))

    w = random_weights((3, 4), seed=14)
    p = penalties.get(name, scale=0.5)
    assert isinstance(p, MaxAbs)
    np.testing.assert_allclose(to_numpy(p(exact(w))), 0.5 * np.max(np.abs(w)), rtol=1e-12)


@pytest.mark.parametrize("taken", BUILTIN)
def test_register_taken_name_raises(taken):
    with pytest.raises(ValueError, match="already registered"):

        @penalties.register(taken)
        def dummy(w):
            return keras.ops.sum(w)

    # The original is still the one registered.
    assert type(penalties.get(taken)).__name__ != "dummy_penalty"


def test_register_same_new_name_twice_raises():
    name = f"twice_{uuid.uuid4().hex}"

    @penalties.register(name)
    def once(w):
        return keras.ops.sum(w)

    with pytest.raises(ValueError):

        @penalties.register(name)
        def again(w):
            return keras.ops.sum(w)


# --------------------------------------------------------------------------------------------
# 8. Zero weights.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (3, 3, 2, 2)], ids=["tall", "wide", "conv4d"])
@pytest.mark.parametrize("name", BUILTIN)
def test_zero_weights_finite_value_and_gradient(name, shape):
    params = PARAMS[name]
    p = penalties.get(name, scale=0.5, **params)
    var = tf.Variable(np.zeros(shape), dtype=tf.float32)
    with tf.GradientTape() as tape:
        out = p(var)
    grad = tape.gradient(out, var)
    value = float(out.numpy())
    assert math.isfinite(value)
    np.testing.assert_allclose(value, reference(name, np.zeros(shape), 0.5, params), rtol=1e-6)
    assert grad is not None
    assert np.all(np.isfinite(grad.numpy()))
