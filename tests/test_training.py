"""In-process training through the Python API: logged numbers, outputs, models and data sets."""

from __future__ import annotations

import numpy as np
import pytest

import regfw
from regfw import cli
from tests.conftest import event_scalars, read_metrics

FAST = ["trainer.epochs=2", "trainer.verbose=0", "trainer.histograms=false"]


def _orthogonal(w):
    w = w.reshape(-1, w.shape[-1])
    return np.sum((w.T @ w - np.eye(w.shape[1])) ** 2)


def test_build_model_attaches_penalties_to_the_articles_weights(fresh_keras):
    model = regfw.build_model(regfw.compose(["+experiment=seed_orthogonal"]))
    assert model.compiled
    with_penalty = [v.path for v in model.trainable_variables if v.regularizer is not None]
    assert with_penalty == ["dense/kernel", "output/kernel"]
    expected = 1e-4 * sum(_orthogonal(v.numpy()) for v in model.trainable_variables if v.ndim > 1)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)

    model = regfw.build_model(regfw.compose(["+experiment=seed_sparsity"]))
    assert all(v.regularizer is not None for v in model.trainable_variables)
    model = regfw.build_model(regfw.compose(["penalty=none"]))
    assert all(v.regularizer is None for v in model.trainable_variables)
    assert model.losses == []


def test_logged_loss_is_data_loss_plus_penalty(tmp_path, fresh_keras):
    # With a zero learning rate the weights stay put, so every logged number is exact.
    cfg = regfw.compose(
        [
            "penalty=orthogonal",
            "penalty.scale=0.01",
            "optimizer=sgd",
            "optimizer.learning_rate=1e-30",
            *FAST,
        ]
    )
    initial = [v.numpy() for v in regfw.build_model(cfg).trainable_variables]
    metrics = regfw.train(cfg, output_dir=tmp_path)
    penalty = 0.01 * sum(_orthogonal(w) for w in initial if w.ndim > 1)
    assert metrics["penalty"]["orthogonal"] == pytest.approx(penalty, rel=1e-5)
    assert metrics["penalty"]["total"] == pytest.approx(penalty, rel=1e-5)
    for split in ("train", "validation"):
        assert metrics[split]["loss"] == pytest.approx(
            metrics[split]["data_loss"] + penalty, rel=1e-5
        )
    train_events = event_scalars(tmp_path / "train")
    assert [s for s, _ in train_events["penalty/total"]] == [0, 1]
    assert train_events["penalty/orthogonal"][-1][1] == pytest.approx(penalty, rel=1e-5)
    assert train_events["data_loss"][-1][1] == pytest.approx(metrics["train"]["data_loss"])
    assert train_events["epoch_loss"][-1][1] == pytest.approx(metrics["train"]["loss"])
    assert read_metrics(tmp_path) == metrics


def test_saved_model_reproduces_validation_data_loss(tmp_path, fresh_keras):
    import keras

    from regfw.build import data

    cfg = regfw.compose(["data=synthetic", *FAST])
    metrics = regfw.train(cfg, output_dir=tmp_path)
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert all(v.regularizer is None for v in model.weights)
    split = data.load(cfg.data, seed=cfg.trainer.seed)
    result = model.evaluate(split.x_val, split.y_val, verbose=0, return_dict=True)
    assert result["data_loss"] == pytest.approx(metrics["validation"]["data_loss"], rel=1e-5)
    assert result["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_penalty_lowers_its_own_value(tmp_path, fresh_keras):
    base = ["data=synthetic", "penalty=orthogonal", "trainer.epochs=5", "trainer.verbose=0"]
    weak = regfw.train(regfw.compose([*base, "penalty.scale=1e-6"]), output_dir=tmp_path / "weak")
    strong = regfw.train(
        regfw.compose([*base, "penalty.scale=0.1"]), output_dir=tmp_path / "strong"
    )
    assert strong["penalty"]["orthogonal"] / 0.1 < weak["penalty"]["orthogonal"] / 1e-6


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=cnn", "data=digits", "penalty=l2"],
        ["model=mlp", "data=digits", "penalty=l1", "optimizer=adamw"],
        ["data=breast_cancer", "trainer.class_weight=balanced", "penalty=clip"],
        ["data=synthetic", "penalty=none", "trainer.class_weight={0:1.0,1:2.0}"],
    ],
)
def test_model_data_and_options_train(tmp_path, fresh_keras, overrides):
    metrics = regfw.train(regfw.compose([*overrides, *FAST]), output_dir=tmp_path)
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 2
    assert np.isfinite(metrics["validation"]["data_loss"])
    assert (tmp_path / "model.keras").is_file()


def test_digits_cnn_has_softmax_output(fresh_keras):
    model = regfw.build_model(regfw.compose(["model=cnn", "data=digits"]))
    assert model.output_shape == (None, 10)
    assert model.get_layer("output").get_config()["activation"] == "softmax"
    assert [v.path for v in model.trainable_variables if v.regularizer is not None] == [
        "conv2d/kernel", "conv2d_1/kernel", "dense/kernel", "output/kernel",
    ]  # fmt: skip


def test_task_returns_the_validation_data_loss(tmp_path, monkeypatch, fresh_keras):
    monkeypatch.chdir(tmp_path)
    value = cli.run(regfw.compose(["data=synthetic", *FAST]))
    (metrics_file,) = (tmp_path / "outputs").rglob("metrics.json")
    metrics = read_metrics(metrics_file.parent)
    assert value == metrics["validation"]["data_loss"] == metrics["objective"]["value"]


def test_api_error_for_unknown_penalty_name(fresh_keras):
    from regfw.registry import UnknownNameError

    cfg = regfw.compose(["penalty=l1"])
    cfg.penalty.name = "l11"
    with pytest.raises(UnknownNameError, match="Did you mean 'l1'"):
        regfw.build_model(cfg)
