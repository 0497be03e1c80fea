"""The penalty enters the loss exactly once per step, unweighted (DESIGN.md, traps 2 and 3).

regfw attaches penalties as `variable.regularizer`, so Keras adds `model.losses` once in
`Trainer.compute_loss`. Each test measures the numbers and, next to them, the article's pattern (the
penalty added to every sample inside a custom loss function, seed/000_a65775c7e0f125bb.txt), to show
the same check fails for the mistake it guards against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import regfw
from regfw import penalties
from regfw.build.attach import attach_penalties
from regfw.build.data import load
from tests.conftest import layer_weights, train_step_function

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.05  # large enough that the penalty is most of the loss of the article's MLP
SYNTHETIC = ["penalty=orthogonal", f"penalty.scale={SCALE}", "data=synthetic"]


@pytest.fixture(autouse=True)
def _clean_session():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def orthogonal_np(w: np.ndarray) -> float:
    """The article's ||W^T W - I||_F^2 in float64, on the full Gram matrix (no identity trick)."""
    m = np.asarray(w, dtype=np.float64).reshape(-1, w.shape[-1])
    return float(np.sum(np.square(m.T @ m - np.eye(m.shape[1]))))


def penalized(model: keras.Model) -> list:
    """The weights regfw attached a penalty to."""
    return [v for v in model.trainable_variables if v.regularizer is not None]


def kernels(model: keras.Model) -> list:
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def penalty_np(variables: list, scale: float) -> float:
    return scale * sum(orthogonal_np(v.numpy()) for v in variables)


def article_closure(base_loss, variables: list, penalty):
    """The article's pattern: a per-sample loss plus the penalty, inside the loss function."""

    def custom_loss(y_true, y_pred):
        return base_loss(y_true, y_pred) + sum(penalty(v) for v in variables)

    return custom_loss


def unpenalized_twin(model: keras.Model, overrides: list[str]) -> keras.Model:
    """A regfw model with no penalty attached and the same weights as `model`."""
    twin = regfw.build_model(regfw.compose(overrides))
    assert penalized(twin) == []
    twin.set_weights(layer_weights(model))
    return twin


def synthetic_train(cfg):
    split = load(cfg.data, seed=0)
    return split.x_train, split.y_train


def bce_np(y: np.ndarray, p) -> float:
    """Mean binary cross-entropy as Keras computes it (probabilities clipped to [eps, 1 - eps])."""
    return float(np.mean(keras.losses.binary_crossentropy(y, p)))


# 1. sample_weight ------------------------------------------------------------------------------


def test_sample_weight_does_not_multiply_the_penalty():
    cfg = regfw.compose(SYNTHETIC)
    model = regfw.build_model(cfg)
    x, y = synthetic_train(cfg)
    variables = penalized(model)
    assert sorted(v.path for v in variables) == ["dense/kernel", "output/kernel"]
    p = penalty_np(variables, SCALE)
    ones = np.ones(len(x), dtype="float32")

    y_pred = model(x)
    loss1 = float(model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=ones))
    loss2 = float(model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=2 * ones))

    assert p > 0.5 * loss1  # the penalty is most of the loss: a doubling could not hide
    np.testing.assert_allclose(loss1, bce_np(y, y_pred) + p, rtol=1e-5)
    np.testing.assert_allclose(loss2 - p, 2 * (loss1 - p), rtol=1e-5)

    # The article's closure, same weights: equal at weight 1, but weight 2 doubles the penalty too.
    twin = unpenalized_twin(model, ["penalty=none", "data=synthetic"])
    twin.compile(
        optimizer="sgd",
        loss=article_closure(
            keras.losses.binary_crossentropy,
            kernels(twin),
            penalties.get("orthogonal", scale=SCALE),
        ),
    )
    y_pred = twin(x)
    closure1 = float(twin.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=ones))
    closure2 = float(twin.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=2 * ones))
    np.testing.assert_allclose(closure1, loss1, rtol=1e-5)
    np.testing.assert_allclose(closure2, 2 * closure1, rtol=1e-5)
    np.testing.assert_allclose(closure2 - loss2, p, rtol=1e-4)  # one extra penalty
    assert not np.isclose(closure2 - p, 2 * (closure1 - p), rtol=1e-2)


# 2. class_weight -------------------------------------------------------------------------------


def _fit_once(model: keras.Model, x, y, class_weight=None) -> dict[str, float]:
    history = model.fit(
        x, y, epochs=1, batch_size=len(x), shuffle=False, class_weight=class_weight, verbose=0
    )
    return {k: float(v[0]) for k, v in history.history.items()}


def test_class_weight_does_not_multiply_the_penalty():
    cfg = regfw.compose([*SYNTHETIC, "optimizer=sgd"])
    model = regfw.build_model(cfg)
    model.optimizer.learning_rate = 0.0  # the schema wants > 0; frozen weights make runs comparable
    x, y = synthetic_train(cfg)
    before = model.get_weights()
    p = penalty_np(penalized(model), SCALE)
    data_loss = bce_np(y, model(x))

    plain = _fit_once(model, x, y)
    weighted = _fit_once(model, x, y, class_weight={0: 3.0, 1: 3.0})

    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    assert p > 0.5 * plain["loss"]
    np.testing.assert_allclose(plain["loss"], data_loss + p, rtol=1e-5)
    np.testing.assert_allclose(weighted["loss"] - p, 3 * (plain["loss"] - p), rtol=1e-5)
    # regfw's data_loss metric is the loss without the penalty, weighted as the loss is.
    np.testing.assert_allclose(plain["data_loss"], plain["loss"] - p, rtol=1e-5)
    np.testing.assert_allclose(weighted["data_loss"], weighted["loss"] - p, rtol=1e-5)
    np.testing.assert_allclose(weighted["data_loss"], 3 * plain["data_loss"], rtol=1e-5)

    # The article's closure: class_weight triples the penalty along with the data loss.
    twin = unpenalized_twin(model, ["penalty=none", "data=synthetic"])
    twin.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=article_closure(
            keras.losses.binary_crossentropy,
            kernels(twin),
            penalties.get("orthogonal", scale=SCALE),
        ),
    )
    closure_plain = _fit_once(twin, x, y)["loss"]
    closure_weighted = _fit_once(twin, x, y, class_weight={0: 3.0, 1: 3.0})["loss"]
    np.testing.assert_allclose(closure_plain, plain["loss"], rtol=1e-5)
    np.testing.assert_allclose(closure_weighted, 3 * closure_plain, rtol=1e-5)
    np.testing.assert_allclose(closure_weighted - weighted["loss"], 2 * p, rtol=1e-4)


# 3. multi-output -------------------------------------------------------------------------------


def _two_headed() -> keras.Model:
    inputs = keras.Input((10,), name="inputs")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    head_a = keras.layers.Dense(1, activation="sigmoid", name="head_a")(hidden)
    head_b = keras.layers.Dense(1, name="head_b")(hidden)
    return keras.Model(inputs, [head_a, head_b])


def test_multi_output_adds_the_penalty_once():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 10)).astype("float32")
    y_a = (x[:, :1] > 0).astype("float32")
    y_b = x[:, 1:2] * 2.0

    scale = 0.5  # the regression head's loss is larger: a larger scale keeps P dominant
    model = _two_headed()
    cfg = regfw.compose(
        ["penalty=orthogonal", f"penalty.scale={scale}", "penalty.include=[hidden/kernel]"]
    )
    (term,) = attach_penalties(model, cfg)
    assert [v.path for v in term.variables] == ["hidden/kernel"]
    assert [id(v) for v in penalized(model)] == [id(v) for v in term.variables]
    model.compile(optimizer="sgd", loss=["binary_crossentropy", "mse"])

    p = penalty_np(term.variables, scale)
    pred_a, pred_b = model(x)
    loss_a = bce_np(y_a, pred_a)
    loss_b = float(np.mean(np.square(y_b - np.asarray(pred_b))))
    total = float(model.compute_loss(x=x, y=[y_a, y_b], y_pred=[pred_a, pred_b]))

    assert p > 0.5 * (loss_a + loss_b)
    np.testing.assert_allclose(total, loss_a + loss_b + p, rtol=1e-5)

    # The article's closure on each output adds the shared weights' penalty once per output.
    twin = _two_headed()
    twin.set_weights(layer_weights(model))
    assert penalized(twin) == []
    penalty = penalties.get("orthogonal", scale=scale)
    hidden_kernel = [twin.get_layer("hidden").kernel]
    twin.compile(
        optimizer="sgd",
        loss=[
            article_closure(keras.losses.binary_crossentropy, hidden_kernel, penalty),
            article_closure(keras.losses.mean_squared_error, hidden_kernel, penalty),
        ],
    )
    closure_total = float(twin.compute_loss(x=x, y=[y_a, y_b], y_pred=twin(x)))
    np.testing.assert_allclose(closure_total, loss_a + loss_b + 2 * p, rtol=1e-5)
    np.testing.assert_allclose(closure_total - total, p, rtol=1e-4)


# 4. tf.distribute ------------------------------------------------------------------------------

MIRRORED_SCRIPT = r"""
import json
import os

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
tf.config.experimental.enable_op_determinism()

import keras
import numpy as np

import regfw
from regfw import penalties
from regfw.build.attach import attach_penalties

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 10)).astype("float32")
y = (x[:, :1] + 0.5 * rng.normal(size=(64, 1)) > 0).astype("float32")


class Unscaled(keras.Model):
    # Adds the penalty in compute_loss itself, not divided by the number of replicas.
    penalty = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        return loss + sum(self.penalty(v) for v in self.trainable_variables if len(v.shape) == 2)


def build(kind):
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(hidden)
    model = (Unscaled if kind == "unscaled" else keras.Model)(inputs, outputs)
    penalty = penalties.get("orthogonal", scale=0.1)
    kernels = [v for v in model.trainable_variables if len(v.shape) == 2]
    loss = "binary_crossentropy"
    if kind == "regfw":  # regfw's own attach step, from a config
        cfg = regfw.compose(["penalty=orthogonal", "penalty.scale=0.1"])
        (term,) = attach_penalties(model, cfg)
        assert [v.path for v in term.variables] == ["hidden/kernel", "out/kernel"]
    elif kind == "unscaled":
        model.penalty = penalty
    elif kind == "closure":  # the article: per-sample loss + penalty
        def loss(y_true, y_pred):
            return keras.losses.binary_crossentropy(y_true, y_pred) + sum(
                penalty(v) for v in kernels
            )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=loss)
    return model


def own(model):  # the layers' weights, without regfw's penalty state (scales)
    return [v for v in model.weights if not v.path.startswith("penalty_state/")]


init = [v.numpy().copy() for v in own(build("regfw"))]


def run(kind, strategy):
    with strategy.scope():
        model = build(kind)
    for variable, value in zip(own(model), init, strict=True):
        variable.assign(value)
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    return model.get_weights(), model.distribute_strategy.num_replicas_in_sync


def max_diff(a, b):
    return float(max(np.max(np.abs(u - v)) for u, v in zip(a, b)))


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
default = tf.distribute.get_strategy()
reference, one = run("regfw", default)
out = {"replicas": [one], "moved": max_diff(reference, init)}
for name, kind, strategy in [
    ("mirrored", "regfw", mirrored),
    ("unscaled_one_device", "unscaled", default),
    ("unscaled_mirrored", "unscaled", mirrored),
    ("closure_mirrored", "closure", mirrored),
]:
    weights, replicas = run(kind, strategy)
    out[name] = max_diff(reference, weights)
    out["replicas"].append(replicas)
print("RESULT " + json.dumps(out))
"""


def test_mirrored_strategy_matches_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    print(out)

    assert out["replicas"] == [1, 2, 1, 2, 2]
    assert out["moved"] > 1e-2  # training moved the weights, so equality is not trivial
    assert out["mirrored"] < 1e-5  # Keras divides `model.losses` by the replica count
    # Adding the penalty in a compute_loss override is right on one device...
    assert out["unscaled_one_device"] < 1e-5
    # ...but counts it once per replica under MirroredStrategy: the check catches it.
    assert out["unscaled_mirrored"] > 1e-4
    # The article's per-sample closure is reduced by the loss, so it is replica-scaled too.
    assert out["closure_mirrored"] < 1e-5


# 5. the scale is a variable --------------------------------------------------------------------


def test_set_scale_takes_effect_without_retracing():
    cfg = regfw.compose([*SYNTHETIC, "optimizer=sgd"])
    model = regfw.build_model(cfg)
    model.optimizer.learning_rate = 0.0
    x, y = synthetic_train(cfg)
    variables = penalized(model)
    (penalty,) = {id(v.regularizer): v.regularizer for v in variables}.values()
    value = penalty_np(variables, 1.0)  # unscaled
    data_loss = bce_np(y, model(x))

    first = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(first["loss"], data_loss + SCALE * value, rtol=1e-5)
    train_function = model.train_function
    step = train_step_function(model)
    traces = step.experimental_get_tracing_count()
    assert traces >= 1

    penalty.set_scale(0.5)
    assert float(penalty.scale_variable.numpy()) == 0.5
    loss = float(model.compute_loss(x=x, y=y, y_pred=model(x)))
    np.testing.assert_allclose(loss, data_loss + 0.5 * value, rtol=1e-5)
    second = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(second["loss"], data_loss + 0.5 * value, rtol=1e-5)
    assert model.train_function is train_function
    assert train_step_function(model) is step
    assert step.experimental_get_tracing_count() == traces

    # A Python float scale read by the article's closure is frozen into the traced step.
    twin = unpenalized_twin(model, ["penalty=none", "data=synthetic", "optimizer=sgd"])
    unit = penalties.get("orthogonal", scale=1.0)
    settings = {"scale": SCALE}
    twin_kernels = kernels(twin)

    def custom_loss(y_true, y_pred):
        penalty_sum = sum(unit(v) for v in twin_kernels)
        return keras.losses.binary_crossentropy(y_true, y_pred) + settings["scale"] * penalty_sum

    twin.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=custom_loss)
    np.testing.assert_allclose(
        twin.train_on_batch(x, y, return_dict=True)["loss"], first["loss"], rtol=1e-5
    )
    settings["scale"] = 0.5
    stale = twin.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(stale, data_loss + SCALE * value, rtol=1e-5)
    assert abs(stale - second["loss"]) > 0.1 * value
