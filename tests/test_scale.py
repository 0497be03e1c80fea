"""Scale: the tf.data pipeline, tf.distribute strategies, mixed precision and XLA."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import regfw
from regfw.config.schema import ConfigError, validate
from tests.conftest import REPO, layer_weights, read_metrics, run_train

FAST = ["trainer.verbose=0", "trainer.histograms=false"]
# 320 training samples: whole batches of 32, so two replicas of 16 see exactly one device's batch.
EVEN = ["data=synthetic", "data.n_samples=400", "optimizer=sgd", "optimizer.learning_rate=0.1"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.strategy=mirrorred", "expected one of default, mirrored, multi_worker. Did you"),
        ("trainer.precision=fp16", "expected one of float32, mixed_float16, mixed_bfloat16"),
        ("trainer.jit_compile=1", "trainer.jit_compile=1: expected true or false"),
    ],
)
def test_trainer_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(regfw.compose([override]))


def test_shuffled_batches_are_a_seeded_permutation_per_epoch():
    from regfw.training import pipeline

    x = np.arange(10, dtype="float32").reshape(-1, 1)

    def epochs(seed, count=2):
        dataset, steps = pipeline.shuffled_batches(x, x[:, 0], batch_size=4, seed=seed)
        batches = [b[1].numpy() for b in dataset.take(steps * count)]
        assert [len(b) for b in batches[:steps]] == [4, 4, 2]
        return [np.concatenate(batches[i * steps : (i + 1) * steps]) for i in range(count)]

    first, second = epochs(seed=0)
    assert sorted(first) == sorted(second) == list(range(10))
    assert list(first) != list(second)
    # A new iterator starts again from epoch 0 (Keras peeks at a batch under tf.distribute).
    assert [list(e) for e in epochs(seed=0)] == [list(first), list(second)]
    assert list(epochs(seed=1)[0]) != list(first)


def test_pipeline_with_class_weight_matches_keras_on_arrays(fresh_keras):
    import keras

    from regfw.build import data
    from regfw.training import pipeline

    cfg = regfw.compose(["data=synthetic", "penalty=l1"])
    split = data.load(cfg.data, seed=0)
    weights = {0: 1.0, 1: 3.0}
    trained = []
    for use_pipeline in (True, False):
        keras.utils.set_random_seed(0)
        model = regfw.build_model(cfg)
        if use_pipeline:
            batches = pipeline.ordered_batches(split.x_train, split.y_train, 32)
            model.fit(batches, class_weight=weights, epochs=1, verbose=0, shuffle=False)
        else:
            model.fit(split.x_train, split.y_train, batch_size=32, class_weight=weights,
                      epochs=1, verbose=0, shuffle=False)  # fmt: skip
        trained.append(model.get_weights())
    for a, b in zip(*trained, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_same_seed_same_run(tmp_path, fresh_keras):
    cfg = regfw.compose(["data=synthetic", "trainer.epochs=2", *FAST])
    first = regfw.train(cfg, output_dir=tmp_path / "a")
    second = regfw.train(cfg, output_dir=tmp_path / "b")
    for key in ("train", "validation", "penalty"):
        assert first[key] == second[key]


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, regfw
from regfw.training import distribute
result = {}
for strategy in ("default", "mirrored"):
    cfg = regfw.compose([*sys.argv[2:], f"trainer.strategy={strategy}"])
    metrics = regfw.train(cfg, output_dir=f"{sys.argv[1]}/{strategy}")
    model = keras.saving.load_model(f"{sys.argv[1]}/{strategy}/model.keras")
    result[strategy] = {"metrics": metrics, "weights": [w.tolist() for w in model.get_weights()]}
result["replicas"] = distribute.strategy("mirrored").num_replicas_in_sync
print(json.dumps(result))
"""


def test_mirrored_on_two_cpus_matches_one_device(tmp_path):
    args = [*EVEN, "penalty.scale=0.01", "trainer.epochs=1", *FAST]
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["replicas"] == 2
    one, two = result["default"], result["mirrored"]
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    # The penalty is added once per global step: the loss is data loss + penalty on both.
    assert two["metrics"]["penalty"] == pytest.approx(one["metrics"]["penalty"], rel=1e-5)
    assert two["metrics"]["validation"] == pytest.approx(one["metrics"]["validation"], rel=1e-5)
    assert two["metrics"]["train"] == pytest.approx(one["metrics"]["train"], rel=1e-5)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# What gRPC says when a worker's port was taken between `_free_ports` and the worker binding it.
BIND_FAILURES = ("Address already in use", "Failed to add port", "Could not start gRPC server")


def _two_workers(tmp_path, args):
    """Runs `train.py` as the two workers of a loopback cluster; returns their outputs.

    The ports are free when chosen but closed again before the workers bind them, so another
    process can take one in between: such a start is retried with new ports (up to 3 times).
    """
    for attempt in range(3):
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        processes = []
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
            command = [sys.executable, str(REPO / "train.py"), *args,
                       f"hydra.run.dir={tmp_path}/w{index}"]  # fmt: skip
            processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT))  # fmt: skip
        try:
            outputs = [p.communicate(timeout=240)[0] for p in processes]
        finally:
            for p in processes:
                p.kill()
        codes = [p.returncode for p in processes]
        if codes == [0, 0] or attempt == 2 or not any(f in "".join(outputs) for f in BIND_FAILURES):
            assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
            return outputs
        for index in range(2):
            shutil.rmtree(tmp_path / f"w{index}", ignore_errors=True)
    raise AssertionError("unreachable")


def test_two_workers_on_loopback_agree_with_one_device(tmp_path, fresh_keras):
    import keras

    args = [*EVEN, "trainer.epochs=2", *FAST]
    _two_workers(tmp_path, [*args, "trainer.strategy=multi_worker"])
    start = layer_weights(regfw.build_model(regfw.compose(args)))  # seeded as the run seeds it
    one = regfw.train(regfw.compose(args), output_dir=tmp_path / "one")
    first, second = (read_metrics(tmp_path / name) for name in ("w0", "w1"))
    assert first["train"] == second["train"] and first["penalty"] == second["penalty"]
    models = [
        keras.saving.load_model(tmp_path / name / "model.keras") for name in ("w0", "w1", "one")
    ]
    for a, b in zip(*(m.get_weights() for m in models[:2]), strict=True):
        np.testing.assert_array_equal(a, b)  # every worker trains the same weights
    # ...and the same as one device with the same seed: the same batches, each split between the
    # two workers (16 samples each), gradients summed. Measured within 3e-8 after 2 epochs of SGD;
    # atol 1e-6 leaves a margin of about 30 for other summation orders.
    moved = max(np.max(np.abs(a - b)) for a, b in zip(models[2].get_weights(), start, strict=True))
    assert moved > 1e-2  # training moved the weights, so agreement is not trivial
    for a, b in zip(models[0].get_weights(), models[2].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for section in ("train", "validation", "penalty"):
        assert first[section] == pytest.approx(one[section], rel=1e-5), section


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_penalty_matches_float32(tmp_path, fresh_keras, precision):
    import keras

    base = ["data=synthetic", "penalty.scale=0.01", "trainer.epochs=2", *FAST]
    keras.utils.set_random_seed(0)
    model = regfw.build_model(regfw.compose([*base, f"trainer.precision={precision}"]))
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert model.get_layer("dense").compute_dtype == precision.removeprefix("mixed_")
    assert all(loss.dtype == "float32" for loss in model.losses)
    is_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == (precision == "mixed_float16")
    keras.utils.set_random_seed(0)
    reference = regfw.build_model(regfw.compose(base))
    # The same float32 weights give the same float32 penalty, bit for bit (as measured).
    assert float(sum(model.losses)) == float(sum(reference.losses))

    mixed = regfw.train(regfw.compose([*base, f"trainer.precision={precision}"]), tmp_path / "m")
    single = regfw.train(regfw.compose(base), tmp_path / "s")
    # After 2 epochs in low precision the weights differ a little: measured 6.9e-6 (float16) and
    # 1.5e-4 (bfloat16) relative; the tolerances leave a margin of about 14.
    rtol = {"mixed_float16": 1e-4, "mixed_bfloat16": 2e-3}[precision]
    assert mixed["penalty"]["total"] == pytest.approx(single["penalty"]["total"], rel=rtol)
    assert np.isfinite(mixed["validation"]["data_loss"])


def test_jit_compile_trains_like_without(tmp_path, fresh_keras):
    base = ["data=synthetic", "trainer.epochs=2", *FAST]
    xla = regfw.train(regfw.compose([*base, "trainer.jit_compile=true"]), tmp_path / "xla")
    plain = regfw.train(regfw.compose(base), tmp_path / "plain")
    # Measured: training metrics identical, the penalty within 7.5e-8 (XLA fuses the float32
    # sums differently); rtol 1e-6 leaves a margin of about 13.
    assert xla["train"] == pytest.approx(plain["train"], rel=1e-6)
    assert xla["penalty"] == pytest.approx(plain["penalty"], rel=1e-6)


def test_new_keys_on_the_command_line(tmp_path):
    done = run_train("data=synthetic", "trainer.epochs=1", "trainer.jit_compile=true",
                     "trainer.precision=mixed_bfloat16", f"hydra.run.dir={tmp_path}",
                     cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(tmp_path)["status"] == "completed"
    # The keys reached Keras: model.keras (a zip) records how the model was compiled and built.
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))
    assert saved["compile_config"]["jit_compile"] is True  # the default is false
    policies = {
        layer["config"]["name"]: layer["config"]["dtype"]["config"]["name"]
        for layer in saved["config"]["layers"]
        if isinstance(layer["config"].get("dtype"), dict)
    }
    assert policies == {"dense": "mixed_bfloat16", "output": "mixed_bfloat16"}


def test_mixed_float16_loss_scale_covers_the_penalty(fresh_keras):
    # Under mixed_float16 Keras's LossScaleOptimizer multiplies the loss by its scale (2^15 at
    # first) before the gradients and divides them again after: the penalty must be inside that
    # loss, or its gradient would be divided without having been multiplied. One SGD step with a
    # penalty that dominates the loss moves the kernel as the float32 step does.
    import keras

    from regfw.build import data
    from regfw.training import trainer

    base = ["data=synthetic", "penalty=orthogonal", "penalty.scale=1.0", "optimizer=sgd",
            "optimizer.learning_rate=0.01", *FAST]  # fmt: skip
    split = data.load(regfw.compose(base).data, seed=0)
    x, y = split.x_train[:64], split.y_train[:64]
    steps, start = {}, None
    for precision in ("float32", "mixed_float16"):
        keras.utils.set_random_seed(0)
        model, _ = trainer.build(regfw.compose([*base, f"trainer.precision={precision}"]))
        if start is None:
            start = model.get_weights()
        model.set_weights(start)
        kernel = model.get_layer("dense").kernel
        before = kernel.numpy().astype(np.float64)
        model.train_on_batch(x, y)
        steps[precision] = kernel.numpy() - before
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(model.optimizer.dynamic_scale.numpy()) >= 2**14  # the loss was scaled, no overflow
    # The penalty's own step, from its gradient 4 W (W^T W - I) (times scale and learning rate).
    penalty_step = -0.01 * 1.0 * 4 * before @ (before.T @ before - np.eye(before.shape[1]))
    size = np.max(np.abs(penalty_step))
    assert np.max(np.abs(steps["float32"] - penalty_step)) < 0.1 * size  # the penalty dominates
    # float16 activations round the data loss's share (measured 3.3% of the step): the steps
    # agree within 1.7e-5 of its largest entry, measured; 1e-3 leaves a margin of about 60.
    np.testing.assert_allclose(steps["mixed_float16"], steps["float32"], rtol=0, atol=1e-3 * size)
