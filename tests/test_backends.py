"""Keras's JAX backend: `trainer.backend=jax` runs the whole product with the same penalties.

This process runs TensorFlow; JAX runs happen in subprocesses (one process, one backend). The
end-to-end tests that matter on both backends take the `backend` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import regfw
from regfw import penalties
from regfw.cli import find_problem
from regfw.config import backend
from regfw.config.schema import validate
from regfw.errors import ConfigError
from tests.conftest import REPO, event_tags, read_metrics, run_train

# Its module-scoped runs are made once: the whole module on one xdist worker.
pytestmark = pytest.mark.xdist_group("test_backends")

FAST = ["data=synthetic", "data.n_samples=200", "trainer.epochs=2", "trainer.histograms=false",
        "trainer.verbose=0"]  # fmt: skip
SHIPPED = ["clip", "l1", "l2", "elastic", "orthogonal", "orthogonal_offdiag", "srip", "spectral",
           "group_lasso", "hoyer", "max_norm", "keras_l1", "keras_l2", "keras_l1l2",
           "keras_orthogonal"]  # fmt: skip


def test_backend_is_checked_with_the_config(monkeypatch):
    with pytest.raises(ConfigError, match=r"^trainer\.backend='torch': expected one of"):
        validate(regfw.compose(["trainer.backend=torch"]))
    with pytest.raises(ConfigError, match=r"multi_worker runs on trainer\.backend=tensorflow"):
        validate(regfw.compose(["trainer.backend=jax", "trainer.strategy=multi_worker"]))
    problem = find_problem(["-m", "trainer.backend=tensorflow,jax"])
    assert problem.startswith(
        "trainer.backend: the jobs of this multirun ask for jax and tensorflow"
    )
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.resolve(regfw.compose([]).trainer) == "jax"  # honoured when the key is unset
    assert backend.resolve(regfw.compose(["trainer.backend=tensorflow"]).trainer) == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(
        ConfigError, match=r"^KERAS_BACKEND='torch': regfw runs on tensorflow or jax"
    ):
        backend.resolve(regfw.compose([]).trainer)


def test_a_process_keeps_the_backend_keras_was_imported_with():
    assert keras.config.backend() == "tensorflow"
    with pytest.raises(ConfigError, match="already imported in this process with the tensorflow"):
        regfw.build_model(regfw.compose(["trainer.backend=jax"]))


AGREEMENT = """
import json
import numpy as np
import keras
from regfw import penalties


def agreement(names):
    out = {}
    for name in names:
        rng = np.random.default_rng(0)
        for shape in ((30, 64), (3, 3, 4, 8), (64, 1)):
            w = keras.Variable((rng.normal(0, 0.5, size=shape)).astype("float32"))
            p = penalties.get(name, scale=0.5)
            if p.unsupported(shape):
                continue
            if keras.config.backend() == "jax":
                import jax
                value, grad = jax.value_and_grad(lambda v: p(v))(w.value)
            else:
                import tensorflow as tf
                with tf.GradientTape() as tape:
                    value = p(w)
                grad = tape.gradient(value, w.value)
            rms = float(np.sqrt(np.mean(np.square(w.numpy()))))
            out[f"{name} {shape}"] = [float(value), np.asarray(grad).ravel().tolist(), rms]
    return json.loads(json.dumps(out))
"""


def _penalties_on_jax() -> dict:
    code = (
        AGREEMENT
        + "import sys\nprint('RESULT ' + json.dumps(agreement(json.loads(sys.argv[1]))))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO),
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, json.dumps(SHIPPED)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def _penalties_on_tensorflow() -> dict:
    """The same code in this process, which runs TensorFlow (asserted above)."""
    assert keras.config.backend() == "tensorflow"
    namespace: dict = {}
    exec(AGREEMENT, namespace)
    return namespace["agreement"](SHIPPED)


def test_every_penalty_agrees_between_the_backends():
    tf_values, jax_values = _penalties_on_tensorflow(), _penalties_on_jax()
    assert sorted(tf_values) == sorted(jax_values) and len(tf_values) >= 40
    for key, (value, grad, rms) in tf_values.items():
        other_value, other_grad, _ = jax_values[key]
        # float32 on both: measured within 3e-7 (values) and 2e-6 of the gradient's size.
        assert other_value == pytest.approx(value, rel=1e-5, abs=1e-7), key
        # The gradient's natural size: its largest entry, or value / rms(w) where it vanishes
        # (keras_orthogonal on a one-column kernel in rows mode is constant: float noise).
        size = max(np.max(np.abs(grad)), abs(value) / rms)
        np.testing.assert_allclose(other_grad, grad, rtol=1e-5, atol=1e-5 * size, err_msg=key)


@pytest.fixture(scope="module")
def everything_on_jax(tmp_path_factory):
    """One JAX run with every penalty as a term, a schedule, a constraint, AdamW, class weights."""
    root = tmp_path_factory.mktemp("jax")
    terms = [f"+penalty@penalties.{n}={n}" for n in SHIPPED if n != "orthogonal"]
    result = run_train(
        *FAST, "trainer.backend=jax", "trainer.epochs=3", "trainer.histograms=true",
        "penalty.schedule.name=warmup", "penalty.schedule.epochs=2", *terms,
        "+constraint@constraints.mn=max_norm", "optimizer=adamw",
        "trainer.class_weight={0: 1, 1: 3}", f"hydra.run.dir={root / 'run'}", cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root / "run", result


def test_every_feature_runs_on_jax(everything_on_jax):
    run_dir, result = everything_on_jax
    assert "float64" not in result.stderr + result.stdout  # no truncation warnings
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 3
    assert set(metrics["penalty"]) == {*SHIPPED, "total"}
    assert all(np.isfinite(v) for v in metrics["penalty"].values())
    assert metrics["penalty_scale"]["orthogonal"] == pytest.approx(1e-4)  # warmup done by epoch 2
    assert metrics["validation"]["loss"] - metrics["validation"]["data_loss"] == pytest.approx(
        metrics["penalty"]["total"], rel=1e-4
    )
    scales = [v for _, v in _scalars(run_dir / "train")["penalty_scale/orthogonal"]]
    assert scales == pytest.approx([0.0, 0.5e-4, 1e-4])  # the schedule reached the jitted step


def _scalars(folder):
    from tests.conftest import event_scalars

    return event_scalars(folder)


def test_jax_runs_write_what_tensorflow_runs_write(everything_on_jax, tmp_path, fresh_keras):
    run_dir, _ = everything_on_jax
    code = f"""
import json, regfw
model = regfw.load_model({str(run_dir)!r})  # before Keras is imported: the run's backend
import keras
from regfw.build import data
split = data.load(regfw.compose({FAST!r}).data, seed=0)
result = model.evaluate(split.x_val, split.y_val, batch_size=32, verbose=0, return_dict=True)
print("RESULT " + json.dumps({{"backend": keras.config.backend(), "evaluate": result}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    metrics = read_metrics(run_dir)
    assert out["backend"] == "jax"  # load_model took the run's backend
    assert out["evaluate"]["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-5)
    assert out["evaluate"]["data_loss"] == pytest.approx(
        metrics["validation"]["data_loss"], rel=1e-5
    )
    tf_run = tmp_path / "tf"  # a TensorFlow run in this process (which runs TensorFlow)
    assert keras.config.backend() == "tensorflow"
    tf_metrics = regfw.train(regfw.compose([*FAST, "trainer.histograms=true"]), tf_run)
    assert tf_metrics["status"] == "completed"
    for folder in ("train", "validation"):
        jax_tags = {t for t in event_tags(run_dir / folder) if "/" not in t or t.startswith(
            ("penalty/total", "diagnostics/near_zero"))}  # fmt: skip
        tf_tags = {t for t in event_tags(tf_run / folder) if "/" not in t or t.startswith(
            ("penalty/total", "diagnostics/near_zero"))}  # fmt: skip
        assert jax_tags == tf_tags, folder


def test_mirrored_on_jax_is_data_parallel_over_local_devices(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    results = {}
    for strategy in ("default", "mirrored"):
        run_dir = tmp_path / strategy
        done = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *FAST, "data.n_samples=160",
             "trainer.batch_size=16", "trainer.backend=jax", f"trainer.strategy={strategy}",
             f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        results[strategy] = read_metrics(run_dir)
    for section in ("train", "validation", "penalty"):
        for key, value in results["default"][section].items():
            assert results["mirrored"][section][key] == pytest.approx(value, rel=1e-4), key


def test_penalties_module_computes_on_either_backend():
    # This process: TensorFlow. The same call on JAX is in the agreement test above.
    p = penalties.get("l2", scale=0.5)
    assert float(p(keras.Variable(np.ones((2, 2), dtype="float32")))) == pytest.approx(2.0)


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweeps_on_jax(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    result = run_train(
        "-m", *FAST, "trainer.backend=jax", "penalty.scale=1e-4,1e-3",
        f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in row for row in rows[1:])
    for job in ("0", "1"):
        config = (sweep / job / ".hydra" / "config.yaml").read_text()
        assert "backend: jax" in config and read_metrics(sweep / job)["status"] == "completed"


def test_the_jax_input_pipeline_gives_the_tf_data_batches():
    from regfw.training import pipeline

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)).astype("float32"), rng.integers(0, 2, 50).astype("float32")
    dataset, steps = pipeline.shuffled_batches(x, y, 16, seed=7, first_epoch=2)
    batches = pipeline.EpochBatches(x, y, 16, seed=7, first_epoch=2, class_weight={0: 1.0, 1: 3.0})
    expected = iter(dataset)
    assert len(batches) == steps == 4
    for epoch in (2, 3, 4):
        batches.set_epoch(epoch)
        for index in range(steps):
            xb, yb = next(expected)
            got = batches[index]
            np.testing.assert_array_equal(got[0], xb.numpy())
            np.testing.assert_array_equal(got[1], yb.numpy())
            np.testing.assert_array_equal(got[2], np.where(yb.numpy() == 1, 3.0, 1.0))
