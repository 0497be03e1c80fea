"""In-process training through the Python API: logged numbers, outputs, models and data sets."""

from __future__ import annotations

import numpy as np
import pytest

import regfw
from regfw import cli
from tests import references
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


def test_model_keras_is_what_keras_saves_with_its_skipset_cache_found(tmp_path, fresh_keras):
    import zipfile

    import h5py
    import keras
    from keras.src.backend.common import global_state

    from regfw.training import checkpoints
    from regfw.training.trainer import build

    model, _ = build(regfw.compose(["data=synthetic", "penalty=orthogonal", *FAST]))
    model.optimizer.build(model.trainable_variables)
    keras_file, ours = tmp_path / "keras.keras", tmp_path / "regfw.keras"
    model.save(keras_file)  # Keras alone: its skip-sets are stored where it never looks
    assert global_state.get_global_attribute("saving_attr_skiplist_Layer") is None
    checkpoints.save(model, ours)
    assert global_state.get_global_attribute("saving_attr_skiplist_Layer") is not None

    def contents(path):
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json")
            archive.extract("model.weights.h5", path.parent / path.stem)
        arrays = {}
        with h5py.File(path.parent / path.stem / "model.weights.h5") as weights:
            weights.visititems(
                lambda name, node: (
                    arrays.update({name: node[()]}) if isinstance(node, h5py.Dataset) else None
                )
            )
        return config, arrays

    (config_a, arrays_a), (config_b, arrays_b) = contents(keras_file), contents(ours)
    assert config_a == config_b
    assert sorted(arrays_a) == sorted(arrays_b) and len(arrays_a) > 8  # kernels, slots, scale
    for name, array in arrays_a.items():
        np.testing.assert_array_equal(array, arrays_b[name], err_msg=name)
    keras.saving.load_model(ours)


def test_penalty_lowers_its_own_value(tmp_path, fresh_keras):
    base = ["data=synthetic", "penalty=orthogonal", "trainer.epochs=5", "trainer.verbose=0"]
    weak = regfw.train(regfw.compose([*base, "penalty.scale=1e-6"]), output_dir=tmp_path / "weak")
    strong = regfw.train(
        regfw.compose([*base, "penalty.scale=0.1"]), output_dir=tmp_path / "strong"
    )
    assert strong["penalty"]["orthogonal"] / 0.1 < weak["penalty"]["orthogonal"] / 1e-6


def _l2(weights):
    return 1e-4 * sum(np.sum(w.astype(np.float64) ** 2) for w in weights)


def _l1(weights):
    return 1e-3 * 0.1 * sum(np.sum(np.abs(w.astype(np.float64))) for w in weights)


def _clip(weights):
    return 0.01 * sum(np.sum((w - np.clip(w, -0.1, 0.1)).astype(np.float64) ** 2) for w in weights)


# id -> (overrides, the penalty term and its formula on every trainable weight, class weights)
OPTION_RUNS = {
    "cnn_digits_l2": (["model=cnn", "data=digits", "penalty=l2"], ("l2", _l2), None),
    "mlp_digits_l1_adamw": (
        ["model=mlp", "data=digits", "penalty=l1", "optimizer=adamw"], ("l1", _l1), None,
    ),
    "class_weight_balanced_clip": (
        ["data=breast_cancer", "trainer.class_weight=balanced", "penalty=clip",
         "penalty.lower=-0.1", "penalty.upper=0.1"], ("clip", _clip), "balanced",
    ),
    "class_weight_mapping_no_penalty": (
        ["data=synthetic", "penalty=none", "trainer.class_weight={0:1.0,1:2.0}"], None,
        {0: 1.0, 1: 2.0},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OPTION_RUNS))
def test_model_data_and_options_train(tmp_path, fresh_keras, monkeypatch, case):
    import keras

    from regfw.build import data

    overrides, term, class_weight = OPTION_RUNS[case]
    fits = []
    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):  # what regfw hands to Keras
        fits.append(kwargs)
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    cfg = regfw.compose([*overrides, *FAST])
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 2
    split = data.load(cfg.data, seed=cfg.trainer.seed)

    # The class weights Keras trained with: scikit-learn's inverse frequencies, or the mapping.
    (call,) = fits
    if class_weight == "balanced":
        expected = references.balanced_class_weights(split.y_train)
        assert max(expected.values()) > 1.5 * min(expected.values())  # breast_cancer: imbalanced
        assert call["class_weight"] == pytest.approx(expected, rel=1e-12)
    else:
        assert call["class_weight"] == class_weight

    # The trained model (plain Keras, from model.keras): its optimizer, its penalty, its loss.
    model = keras.saving.load_model(tmp_path / "model.keras")
    optimizer = model.optimizer.get_config()
    assert type(model.optimizer).__name__ == {"adam": "Adam", "adamw": "AdamW"}[cfg.optimizer.name]
    assert optimizer["learning_rate"] == pytest.approx(cfg.optimizer.learning_rate)
    if cfg.optimizer.name == "adamw":
        assert optimizer["weight_decay"] == pytest.approx(0.004)
    weights = [v.numpy() for v in model.trainable_weights]
    if term is None:
        assert metrics["penalty"] == {"total": 0.0}
    else:
        name, formula = term
        assert formula(weights) > 1e-4  # the penalty is not trivially 0
        assert metrics["penalty"][name] == pytest.approx(formula(weights), rel=1e-5)
    predictions = model.predict(split.x_val, verbose=0)
    loss = references.data_loss(split.y_val, predictions, split.num_classes)
    assert metrics["validation"]["data_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["validation"]["loss"] == pytest.approx(
        loss + metrics["penalty"]["total"], rel=1e-5
    )
    accuracy = references.second_metric(split.y_val, predictions, split.num_classes)
    assert metrics["validation"]["accuracy"] == pytest.approx(accuracy)


def test_balanced_class_weights_are_inverse_frequency():
    from regfw.build import data

    labels = data.load(regfw.compose(["data=breast_cancer"]).data, seed=0).y_train
    counts = np.bincount(labels.ravel().astype(int))
    assert counts[0] != counts[1]  # imbalanced: inverse frequencies differ from 1
    weights = data.class_weights("balanced", labels, 2)
    assert weights == pytest.approx(references.balanced_class_weights(labels), rel=1e-12)
    assert weights == pytest.approx({c: len(labels) / (2 * counts[c]) for c in (0, 1)})
    digits = data.load(regfw.compose(["data=digits"]).data, seed=0).y_train
    assert data.class_weights("balanced", digits, 10) == pytest.approx(
        references.balanced_class_weights(digits), rel=1e-12
    )
    # A mapping is taken as given; a class it leaves out weighs 1.
    assert data.class_weights({1: 3.0}, labels, 2) == {0: 1.0, 1: 3.0}


def test_balanced_class_weights_weigh_the_data_loss(tmp_path, fresh_keras):
    # With the weights frozen (learning rate 1e-30), the logged training data loss is the
    # class-weighted mean BCE of the model's predictions, weights from scikit-learn.
    import keras

    from regfw.build import data
    from regfw.training import trainer

    cfg = regfw.compose(["data=breast_cancer", "trainer.class_weight=balanced", "optimizer=sgd",
                         "optimizer.learning_rate=1e-30", "trainer.epochs=1", *FAST])  # fmt: skip
    keras.utils.set_random_seed(0)
    split = data.load(cfg.data, seed=0)
    model, _ = trainer.build(cfg)
    history = trainer.fit(cfg, model, split, [])
    weights = references.balanced_class_weights(split.y_train)
    per_sample = np.array([weights[int(c)] for c in split.y_train.ravel()])
    predictions = model.predict(split.x_train, verbose=0)
    expected = references.data_loss(split.y_train, predictions, 2, per_sample)
    unweighted = references.data_loss(split.y_train, predictions, 2)
    assert abs(expected - unweighted) > 1e-3 * unweighted  # the weights change the number
    assert history.history["data_loss"][-1] == pytest.approx(expected, rel=1e-6)


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


@pytest.mark.parametrize(
    ("monitor", "section", "key"),
    [("val_loss", "validation", "loss"), ("data_loss", "train", "data_loss")],
)
def test_a_non_default_monitor_is_what_the_task_returns(
    tmp_path, monkeypatch, fresh_keras, monitor, section, key
):
    monkeypatch.chdir(tmp_path)
    cfg = regfw.compose(["data=synthetic", "data.n_samples=200", f"trainer.monitor={monitor}",
                         *FAST])  # fmt: skip
    value = cli.run(cfg)
    (metrics_file,) = (tmp_path / "outputs").rglob("metrics.json")
    metrics = read_metrics(metrics_file.parent)
    assert value == metrics[section][key] != metrics["validation"]["data_loss"]
    assert metrics["objective"] == {"name": monitor, "value": value}


DIAGNOSTICS = ("near_zero", "orthogonality", "spectral_norm", "frobenius_norm")


def test_diagnostics_are_logged_per_weight_and_model_wide(tmp_path, fresh_keras):
    import keras

    cfg = regfw.compose(["data=synthetic", "data.n_samples=200", "model.units=[16,8]", *FAST])
    metrics = regfw.train(cfg, output_dir=tmp_path)
    events = event_scalars(tmp_path / "train")
    model = keras.saving.load_model(tmp_path / "model.keras")
    weights = {v.path: v.numpy() for v in model.trainable_weights}
    kernels = {path: references.weight_diagnostics(w) for path, w in weights.items() if w.ndim > 1}
    assert sorted(kernels) == ["dense/kernel", "dense_1/kernel", "output/kernel"]
    model_wide = {"near_zero", "orthogonality", "penalty_to_data_loss"}
    expected_tags = {f"diagnostics/{p}/{n}" for p in kernels for n in DIAGNOSTICS}
    expected_tags |= {f"diagnostics/{name}" for name in model_wide}
    assert {tag for tag in events if tag.startswith("diagnostics/")} == expected_tags
    assert set(metrics["diagnostics"]) == {
        tag.removeprefix("diagnostics/") for tag in expected_tags
    }
    for path, values in kernels.items():  # on the final weights, every epoch (steps 0 and 1)
        for name, value in values.items():
            tag = f"diagnostics/{path}/{name}"
            assert [step for step, _ in events[tag]] == [0, 1]
            assert events[tag][-1][1] == pytest.approx(value, rel=1e-5, abs=1e-7), tag
            assert metrics["diagnostics"][f"{path}/{name}"] == pytest.approx(events[tag][-1][1])
    orthogonality = [values["orthogonality"] for values in kernels.values()]
    assert max(orthogonality) > 1.2 * np.mean(orthogonality)  # the mean is not the max
    logged = {name: events[f"diagnostics/{name}"][-1][1] for name in model_wide}
    assert logged["orthogonality"] == pytest.approx(np.mean(orthogonality), rel=1e-5)
    entries = np.concatenate([weights[path].ravel() for path in kernels])
    assert logged["near_zero"] == pytest.approx(np.mean(np.abs(entries) < 1e-3), abs=1e-7)
    ratio = events["penalty/total"][-1][1] / events["data_loss"][-1][1]
    assert logged["penalty_to_data_loss"] == pytest.approx(ratio, rel=1e-5)


def test_diagnostics_false_logs_no_diagnostics(tmp_path, fresh_keras):
    from tests.conftest import event_tags

    cfg = regfw.compose(["data=synthetic", "data.n_samples=200", "trainer.diagnostics=false",
                         *FAST])  # fmt: skip
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert metrics["diagnostics"] == {}
    tags = event_tags(tmp_path / "train")
    assert "penalty/total" in tags and not [t for t in tags if t.startswith("diagnostics")]


def test_api_error_for_unknown_penalty_name(fresh_keras):
    from regfw.registry import UnknownNameError

    cfg = regfw.compose(["penalty=l1"])
    cfg.penalty.name = "l11"
    with pytest.raises(UnknownNameError, match="Did you mean 'l1'"):
        regfw.build_model(cfg)
