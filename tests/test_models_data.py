"""Models (mlp, cnn, rnn, keras.applications) and data (adding problem, keras.datasets, files)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import regfw
from regfw import cli
from regfw.build import data
from regfw.build.loaders import adding_problem
from regfw.config.schema import ConfigError
from tests import references
from tests.conftest import run_train

FAST = ["trainer.epochs=1", "trainer.verbose=0", "trainer.histograms=false"]
KERAS_FILES = {  # name -> (image shape, label shape suffix) as keras.datasets.<name>.load_data() gives
    "mnist": ((28, 28), ()),
    "fashion_mnist": ((28, 28), ()),
    "cifar10": ((32, 32, 3), (1,)),
}


def _keras_npz(path, name, n_train=30, n_test=20):
    """Writes a small file in keras.datasets' format: uint8 images, labels 0..9."""
    image, label = KERAS_FILES[name]
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, *image), dtype=np.uint8)
        arrays[f"y_{split}"] = (np.arange(n) % 10).astype(np.uint8).reshape(n, *label)
    np.savez(path, **arrays)
    return arrays


def _csv(path, n=40, label="target"):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] > 0).astype(int)
    rows = [f"{a},{b},{lab},{c}" for (a, b, c), lab in zip(x, y, strict=True)]
    path.write_text("\n".join([f"a,b,{label},c", *rows]) + "\n")
    return x, y


@pytest.fixture
def files(tmp_path):
    """Writes the small data files the training pairs read into `tmp_path`."""
    rng = np.random.default_rng(3)
    for name in ("mnist", "cifar10"):
        _keras_npz(tmp_path / f"{name}.npz", name)
    _csv(tmp_path / "table.csv")
    np.savez(tmp_path / "sequences.npz", x=rng.normal(size=(45, 6, 3)), y=np.arange(45) % 3)
    np.savez(tmp_path / "images.npz", x=rng.integers(0, 256, (40, 9, 9), dtype=np.uint8),
             y=np.arange(40) % 4)  # fmt: skip
    np.savez(tmp_path / "regression.npz", x=rng.normal(size=(40, 5)), y=rng.normal(size=40))
    return tmp_path


PAIRS = [
    ("mlp_bn_dropout", ["model.batch_norm=true", "model.dropout=0.3", "data=breast_cancer"]),
    ("mlp_csv", ["data=file", "data.path={d}/table.csv", "data.label_column=target",
                 "data.input_shape=[3]"]),
    ("mlp_regression_npz", ["data=file", "data.path={d}/regression.npz", "data.num_classes=0",
                            "data.input_shape=[5]"]),
    ("cnn_mnist", ["model=cnn", "data=mnist", "data.path={d}/mnist.npz", "model.pooling=average"]),
    ("cnn_cifar10", ["model=cnn", "data=cifar10", "data.path={d}/cifar10.npz", "data.limit=20"]),
    ("cnn_images_npz", ["model=cnn", "data=file", "data.path={d}/images.npz",
                        "data.input_shape=[9,9,1]", "data.num_classes=4"]),
    ("rnn_gru_adding", ["model=rnn", "model.cell=gru", "model.units=[4,4]", "data=adding",
                        "data.n_samples=40", "data.timesteps=6"]),
    ("rnn_simple_npz", ["model=rnn", "model.cell=simple", "data=file",
                        "data.path={d}/sequences.npz", "data.input_shape=[6,3]",
                        "data.num_classes=3"]),
]  # fmt: skip


@pytest.mark.parametrize("overrides", [p for _, p in PAIRS], ids=[name for name, _ in PAIRS])
def test_model_and_data_pair_trains_one_epoch(files, fresh_keras, overrides):
    import keras

    cfg = regfw.compose([*(o.format(d=files) for o in overrides), *FAST])
    metrics = regfw.train(cfg, output_dir=files / "run")
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 1
    second = "mae" if cfg.data.num_classes == 0 else "accuracy"
    assert set(metrics["validation"]) == {"loss", "data_loss", second}
    # What the run reports is the trained model's on this data: plain Keras reloads model.keras,
    # predicts the validation split, and NumPy computes the loss, the metric and the penalty.
    model = keras.saving.load_model(files / "run" / "model.keras")
    split = data.load(cfg.data, seed=cfg.trainer.seed)
    steps = -(-len(split.x_train) // cfg.trainer.batch_size)
    assert int(model.optimizer.iterations.numpy()) == steps  # one epoch of optimizer steps
    predictions = model.predict(split.x_val, verbose=0)
    num_classes = cfg.data.num_classes
    expected_loss = references.data_loss(split.y_val, predictions, num_classes)
    assert metrics["validation"]["data_loss"] == pytest.approx(expected_loss, rel=1e-5)
    expected_metric = references.second_metric(split.y_val, predictions, num_classes)
    assert metrics["validation"][second] == pytest.approx(expected_metric, rel=1e-5)
    # The default penalty: orthogonal, 1e-4, on every weight with two or more dimensions.
    penalty = 1e-4 * sum(references.orthogonal(v.numpy()) for v in model.trainable_weights
                         if len(v.shape) >= 2)  # fmt: skip
    assert metrics["penalty"]["orthogonal"] == pytest.approx(penalty, rel=1e-5)
    assert metrics["validation"]["loss"] == pytest.approx(expected_loss + penalty, rel=1e-5)


def test_output_layer_follows_the_data(fresh_keras):
    for overrides, units, activation in [
        (["data=breast_cancer"], 1, "sigmoid"),
        (["data=digits"], 10, "softmax"),
        (["data=adding"], 1, "linear"),
    ]:
        output = regfw.build_model(regfw.compose(overrides)).get_layer("output")
        assert (output.units, output.get_config()["activation"]) == (units, activation)


def test_regression_data_loss_is_the_mean_squared_error(files, fresh_keras):
    import keras

    cfg = regfw.compose(["model=rnn", "data=adding", "data.n_samples=40", "data.timesteps=6",
                         *FAST])  # fmt: skip
    metrics = regfw.train(cfg, output_dir=files / "run")
    split = data.load(cfg.data, seed=cfg.trainer.seed)
    predictions = keras.saving.load_model(files / "run" / "model.keras").predict(
        split.x_val, verbose=0
    )
    errors = predictions - split.y_val
    assert metrics["validation"]["data_loss"] == pytest.approx(np.mean(errors**2), rel=1e-4)
    assert metrics["validation"]["mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-4)
    penalty = metrics["penalty"]["total"]
    assert metrics["validation"]["loss"] == pytest.approx(np.mean(errors**2) + penalty, rel=1e-4)


def test_mlp_layer_names_with_batch_norm_and_dropout(fresh_keras):
    cfg = regfw.compose(["model.units=[8,4]", "model.batch_norm=true", "model.dropout=0.1"])
    model = regfw.build_model(cfg)
    assert [layer.name for layer in model.layers] == [
        "inputs", "dense", "batch_normalization", "activation", "dropout",
        "dense_1", "batch_normalization_1", "activation_1", "dropout_1", "output",
    ]  # fmt: skip
    assert "dense/bias" not in [v.path for v in model.trainable_variables]


def _orthogonal(w):
    return np.sum((w.T @ w - np.eye(w.shape[1])) ** 2)


def test_selectors_reach_the_recurrent_kernels(fresh_keras):
    for cell, layer in [("lstm", "lstm"), ("gru", "gru"), ("simple", "simple_rnn")]:
        cfg = regfw.compose(["model=rnn", f"model.cell={cell}", "model.units=[6,5]",
                             "data=adding", "penalty=orthogonal",
                             "penalty.include=[*recurrent_kernel*]"])  # fmt: skip
        model = regfw.build_model(cfg)
        chosen = [v for v in model.trainable_variables if v.regularizer is not None]
        assert [v.path for v in chosen] == [
            f"{layer}/{layer}_cell/recurrent_kernel", f"{layer}_1/{layer}_cell/recurrent_kernel",
        ]  # fmt: skip
        expected = 1e-4 * sum(_orthogonal(v.numpy()) for v in chosen)
        assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_application_builds_keras_applications_models(files, fresh_keras, monkeypatch, capsys):
    cfg = regfw.compose(["model=application", "+model.kwargs.alpha=0.35", "data=cifar10",
                         f"data.path={files}/cifar10.npz", "penalty.include=[Conv1/kernel]"])  # fmt: skip
    model = regfw.build_model(cfg)
    assert model.output_shape == (None, 10)
    assert [v.path for v in model.trainable_variables if v.regularizer is not None] == [
        "Conv1/kernel"
    ]
    split = data.load(cfg.data, seed=0)
    probabilities = model(split.x_val[:2], training=False)
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, rtol=1e-5)

    cfg.model.architecture = "MobilenetV2"
    with pytest.raises(ConfigError, match=r"^model\.architecture='MobilenetV2'.*'MobileNetV2'\?"):
        regfw.build_model(cfg)
    monkeypatch.chdir(files)
    with pytest.raises(SystemExit) as exit_:  # 8x8 digits are too small: an error, not a traceback
        cli.run(regfw.compose(["model=application", "data=digits", *FAST]))
    error = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in error
    assert error.startswith("regfw: error: model.architecture='MobileNetV2'")
    assert "Input size must be at least 32x32" in error


def test_adding_problem_targets():
    n, steps = 200, 12
    cfg = regfw.compose(["data=adding", f"data.n_samples={n}", f"data.timesteps={steps}"]).data
    x, y = adding_problem(n, steps, seed=cfg.seed)
    assert x.shape == (n, steps, 2) and y.shape == (n,)
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1 and set(np.unique(markers)) == {0.0, 1.0}
    for row in range(n):
        first, second = np.flatnonzero(markers[row])
        assert first < steps // 2 <= second
        assert y[row] == pytest.approx(values[row, first] + values[row, second])
    assert np.var(y) > 0.1  # the pair differs between sequences: the targets are not constant
    split = data.load(cfg, seed=0)
    assert split.x_train.shape == (160, steps, 2) and split.y_train.shape == (160, 1)
    assert split.y_train.dtype == np.float32 and split.num_classes == 0
    assert set(np.unique(split.x_train[..., 1])) == {0.0, 1.0}  # sequences are not standardized


@pytest.mark.parametrize("name", sorted(KERAS_FILES))
def test_keras_datasets_read_a_local_file_in_their_format(tmp_path, name):
    arrays = _keras_npz(tmp_path / "d.npz", name)
    cfg = regfw.compose([f"data={name}", f"data.path={tmp_path}/d.npz"]).data
    split = data.load(cfg, seed=0)
    channels = (1,) if arrays["x_train"].ndim == 3 else ()
    np.testing.assert_allclose(
        split.x_train, arrays["x_train"].reshape(30, *arrays["x_train"].shape[1:], *channels) / 255
    )
    assert split.x_train.dtype == np.float32 and split.x_train.shape[1:] == tuple(cfg.input_shape)
    np.testing.assert_array_equal(split.y_train, arrays["y_train"].ravel())
    np.testing.assert_array_equal(split.y_val, arrays["y_test"].ravel())  # the test split validates
    assert split.y_train.dtype == np.int32 and split.num_classes == 10


def test_keras_datasets_download_through_keras_when_no_path(tmp_path, monkeypatch):
    import keras

    arrays = _keras_npz(tmp_path / "d.npz", "mnist")
    calls = []

    def load_data():  # stands in for the download: no network in tests
        calls.append("mnist")
        return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])

    monkeypatch.setattr(keras.datasets.mnist, "load_data", load_data)
    split = data.load(regfw.compose(["data=mnist"]).data, seed=0)
    assert calls == ["mnist"] and split.x_val.shape == (20, 28, 28, 1)


def test_limit_keeps_a_seeded_stratified_subset(tmp_path):
    _keras_npz(tmp_path / "d.npz", "mnist", n_train=60, n_test=40)
    overrides = ["data=mnist", f"data.path={tmp_path}/d.npz", "data.limit=20"]
    first = data.load(regfw.compose(overrides).data, seed=0)
    assert len(first.x_train) == len(first.x_val) == 20
    assert np.bincount(first.y_train).tolist() == [2] * 10
    again = data.load(regfw.compose(overrides).data, seed=0)
    np.testing.assert_array_equal(first.x_train, again.x_train)


@pytest.mark.parametrize("name", ["breast_cancer", "digits"])
def test_validation_split_is_stratified_and_seeded(name):
    from sklearn import datasets

    cfg = regfw.compose([f"data={name}"]).data
    labels = getattr(datasets, f"load_{name}")(return_X_y=True)[1]
    counts = np.bincount(labels)
    validation_sets = []
    for seed in (0, 1, 2):
        split = data.load(cfg, seed=seed)
        assert len(split.y_val) == math.ceil(cfg.validation_split * len(labels))
        held_out = np.bincount(split.y_val.ravel().astype(int), minlength=len(counts))
        kept = np.bincount(split.y_train.ravel().astype(int), minlength=len(counts))
        np.testing.assert_array_equal(held_out + kept, counts)  # every sample, once
        # Stratified: each class's share of the validation set is its share of the data, to one
        # sample (a plain random split of digits is off by about 6 samples per class).
        assert np.max(np.abs(held_out - cfg.validation_split * counts)) <= 1, held_out
        validation_sets.append(split.x_val)
        np.testing.assert_array_equal(data.load(cfg, seed=seed).x_val, split.x_val)  # seeded
    assert not np.array_equal(validation_sets[0], validation_sets[1])  # the seed matters


def test_breast_cancer_is_standardized_with_the_training_statistics():
    from sklearn import datasets

    raw = datasets.load_breast_cancer().data
    split = data.load(regfw.compose(["data=breast_cancer"]).data, seed=0)
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(split.x_train.std(axis=0), 1, rtol=1e-5)
    # Training and validation features are one increasing affine map of each raw feature.
    features = np.concatenate([split.x_train, split.x_val]).astype(np.float64)
    for column in range(raw.shape[1]):
        x, y = np.sort(raw[:, column]), np.sort(features[:, column])
        slope, intercept = np.polyfit(x, y, 1)
        assert slope > 0
        np.testing.assert_allclose(slope * x + intercept, y, rtol=0, atol=1e-5)


def test_digits_are_scaled_to_the_unit_interval():
    from sklearn import datasets

    raw = datasets.load_digits().data  # 0..16
    split = data.load(regfw.compose(["data=digits"]).data, seed=0)
    assert split.x_train.shape[1:] == (8, 8, 1)
    pixels = np.concatenate([split.x_train.ravel(), split.x_val.ravel()])
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    np.testing.assert_allclose(np.sort(pixels), np.sort(raw.ravel() / 16.0), rtol=1e-7)


def test_csv_file_with_a_label_column(tmp_path):
    x, y = _csv(tmp_path / "t.csv", n=50, label="target")
    cfg = regfw.compose(["data=file", f"data.path={tmp_path}/t.csv", "data.label_column=target",
                         "data.input_shape=[3]"]).data  # fmt: skip
    split = data.load(cfg, seed=0)
    assert split.x_train.shape == (40, 3) and split.y_train.shape == (40, 1)
    assert np.sum(split.y_train) + np.sum(split.y_val) == np.sum(y)
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-5)  # standardized
    features = np.concatenate([split.x_train, split.x_val])
    labels = np.concatenate([split.y_train, split.y_val]).ravel()
    assert features[labels == 1, 0].min() > features[labels == 0, 0].max()  # label = (a > 0)
    for column in range(3):  # standardizing is affine: sorted values stay on a line
        r = np.corrcoef(np.sort(features[:, column]), np.sort(x[:, column]))[0, 1]
        assert r == pytest.approx(1.0)
    cfg.label_column = "targt"
    with pytest.raises(ConfigError, match=r"^data\.label_column='targt'.*Did you mean 'target'"):
        data.load(cfg, seed=0)


FILE_ERRORS = [
    ("empty.csv", "a,label\n", "data.path=", "rows"),
    ("words.csv", "a,label\nx,1\n", "data.path=", "numeric"),
    ("ragged.csv", "a,b,label\n1,2\n", "data.path=", "rows of 3 numbers"),
    ("nan.npz", {"x": np.array([[0.0], [np.nan]]), "y": np.array([0, 1])}, "data.path=", "NaN"),
    ("keys.npz", {"a": np.zeros((4, 1)), "b": np.zeros(4)}, "data.path=", "expected arrays x, y"),
    ("pickled.npz", {"x": np.array([None] * 4), "y": np.zeros(4)}, "data.path=", "pickle"),
    ("broken.npz", b"not a zip file", "data.path=", "is not a .npz file (a .npz is a zip archive)"),
    ("lengths.npz", {"x": np.zeros((5, 1)), "y": np.zeros(4)}, "data.path=", "shape [5, 1]"),
    ("shape.npz", {"x": np.zeros((8, 2)), "y": np.arange(8) % 2}, "data.input_shape=",
     "set data.input_shape=[2]"),
    ("floats.npz", {"x": np.zeros((8, 1)), "y": np.linspace(0, 1, 8)}, "data.num_classes=",
     "num_classes=0"),
    ("labels.npz", {"x": np.zeros((8, 1)), "y": np.arange(8)}, "data.num_classes=", "0..7"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "key", "message"), FILE_ERRORS, ids=[e[0] for e in FILE_ERRORS]
)
def test_bad_data_files_are_one_line_errors_naming_the_key(tmp_path, name, content, key, message):
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    cfg = regfw.compose(["data=file", f"data.path={path}", "data.input_shape=[1]"]).data
    with pytest.raises(ConfigError) as error:
        data.load(cfg, seed=0)
    assert str(error.value).startswith(key) and message in str(error.value)
    assert "\n" not in str(error.value)


# TensorFlow 2.21's C++ start-up lines, printed at import whatever TF_CPP_MIN_LOG_LEVEL says (absl
# logs before absl::InitializeLog). Errors found after the import (a data file's contents, a
# keras.applications size check) follow them; every other stderr line must be the error.
TF_NATIVE_LOG = re.compile(
    r"^([IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ \w+\.cc:\d+\]|WARNING: All log messages before absl"
    r"|To enable the following instructions:)"
)
MISMATCHES = [
    (["model=cnn", "data=adding"], "model='cnn'", "needs image data"),
    (["model=rnn"], "model='rnn'", "needs sequence data"),
    (["model=rnn", "data=digits"], "model='rnn'", "data=digits has input_shape [8, 8, 1]"),
    (["model=application"], "model='application'", "needs image data"),
    (["data=adding", "trainer.class_weight=balanced"], "trainer.class_weight", "regression"),
    (["data=file"], "data.path=null", "expected the path of a .npz or .csv file"),
    (["data=file", "data.path=missing.csv"], "data.path='missing.csv'", "no such file"),
    (["data=mnist", "data.path=mnist.csv"], "data.path='mnist.csv'", "expected the path of a .npz"),
    (["data.num_classes=1"], "data.num_classes=1", "0 (regression) or an integer >= 2"),
    (["data=file", "data.path=nan.npz"], "data.path='nan.npz'", "x has NaN"),
]


@pytest.mark.parametrize(
    ("args", "key", "message"), MISMATCHES, ids=[" ".join(a) for a, _, _ in MISMATCHES]
)
def test_mismatch_is_one_line_before_training_exit_2(tmp_path, args, key, message):
    np.savez(tmp_path / "nan.npz", x=np.full((10, 10), np.nan), y=np.arange(10) % 2)
    result = run_train(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if not TF_NATIVE_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"regfw: error: {key}"), result.stderr
    assert message in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
