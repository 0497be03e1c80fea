"""`python train.py` as a user runs it: real runs, their outputs, and clear errors for bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, event_scalars, event_tags, read_metrics, run_train

BAD_INPUTS = [
    (["penalty=orthogonl"], ["penalty=orthogonl", "Did you mean 'orthogonal'?", "Available: clip"]),
    (["model=mlpp"], ["model=mlpp", "Did you mean 'mlp'?"]),
    (["data=digitz"], ["data=digitz", "Did you mean 'digits'?"]),
    (["optimizer=adamm"], ["optimizer=adamm", "Did you mean 'adam'?"]),
    (["penalty.scal=1e-4"], ["penalty.scal", "Did you mean 'penalty.scale'?"]),
    (["trainer.epochz=3"], ["trainer.epochz", "Did you mean 'trainer.epochs'?"]),
    (["penalty.scale=-1"], ["penalty.scale=-1", ">= 0"]),
    (["penalty.scale=inf"], ["penalty.scale=inf", "finite"]),
    (["penalty.scale=nan"], ["penalty.scale=nan", "finite"]),
    (["penalty.scale=lots"], ["penalty.scale='lots'", "finite number"]),
    (
        ["penalty=clip", "penalty.lower=0.5", "penalty.upper=-0.5"],
        ["penalty.lower=0.5", "lower <= upper"],
    ),
    (["trainer.epochs=0"], ["trainer.epochs=0", "integer >= 1"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "integer >= 1"]),
    (["optimizer.learning_rate=-0.1"], ["optimizer.learning_rate=-0.1", "> 0"]),
    (["data.validation_split=0"], ["data.validation_split=0", "> 0 and < 1"]),
    (["model.units=[]"], ["model.units=[]", "non-empty list"]),
    (["trainer.class_weight={0:1,3:2}"], ["trainer.class_weight", "class 3"]),
    (["model=cnn"], ["model", "needs image data", "data=breast_cancer"]),
    (["-m", "penalty=l1,orthogonl"], ["penalty=orthogonl", "Did you mean 'orthogonal'?"]),
    (["-m", "penalty.scale=1e-3,-2"], ["penalty.scale=-2", ">= 0"]),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, expected):
    result = run_train(*args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regfw: error: "), result.stderr
    for text in expected:
        assert text in lines[0]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))


def test_selector_matching_nothing_is_a_clear_error(tmp_path):
    result = run_train(
        "penalty.include=[nothing/*]", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
        fresh=True,  # TensorFlow is imported before the error: its notices must not show
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()  # TensorFlow's start-up notices are silenced
    assert line.startswith("regfw: error: penalty term 'orthogonal'")
    assert "matches no weight" in line and "dense/kernel" in line


def _modules_after(*argv: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = ['train.py', *{list(argv)!r}]\n"
        "try:\n"
        "    runpy.run_path('train.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES=' + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tensorboard'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("MODULES="))
    return result, json.loads(line.removeprefix("MODULES="))


@pytest.mark.parametrize("argv", [("--cfg", "job"), ("--help",), ("penalty=l1", "--cfg", "job")])
def test_help_and_cfg_do_not_import_tensorflow(argv):
    result, heavy = _modules_after(*argv)
    assert heavy == [], heavy
    assert result.returncode == 0, result.stderr
    if "--cfg" in argv:
        assert "penalty:" in result.stdout and "scale:" in result.stdout


def test_bad_input_does_not_import_tensorflow():
    result, heavy = _modules_after("penalty.scale=-1")
    assert heavy == []
    assert "penalty.scale=-1" in result.stderr


def test_a_jax_run_does_not_import_tensorflow(tmp_path):
    """Training, logging, checkpoints and saving on JAX, without TensorFlow's 6 s import."""
    run_dir = tmp_path / "run"
    result, heavy = _modules_after(
        "trainer.backend=jax", "data=synthetic", "data.n_samples=200", "trainer.epochs=2",
        "penalty=spectral", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (run_dir / "model.keras").is_file() and read_metrics(run_dir)["status"] == "completed"
    assert len(event_tags(run_dir / "train")) > 10  # scalars, histograms and the config text
    assert "keras" in heavy and not [m for m in heavy if m.split(".")[0] == "tensorflow"]


WARM_CHECK = ["data=synthetic", "data.n_samples=300", "trainer.epochs=2", "trainer.batch_size=32"]


def _without_times(text: str) -> list[str]:
    """Output lines with their clock times and durations replaced (they differ between runs)."""
    import re

    text = re.sub(r"^\[\d\d:\d\d:\d\d\]", "[time]", text, flags=re.M)
    return re.sub(r"\b\d+(\.\d+)?s\b", "<s>", text).splitlines()


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_warm_run_is_the_fresh_run(tmp_path, backend):
    """The suite's warm runs (`tests/warm.py`) write and say what a fresh `python train.py` does."""
    runs = {}
    for kind in ("fresh", "warm"):
        run_dir = tmp_path / kind / "run"
        run_dir.parent.mkdir()
        args = [*WARM_CHECK, f"trainer.backend={backend}", f"hydra.run.dir={run_dir}"]
        result = run_train(*args, cwd=tmp_path / kind, fresh=kind == "fresh")
        assert result.returncode == 0, result.stderr
        error = run_train(*args, "trainer.resume=true", "trainer.epochs=1", cwd=tmp_path / kind,
                          fresh=kind == "fresh")  # fmt: skip
        metrics = read_metrics(run_dir)
        files = sorted(
            str(p.relative_to(run_dir)).split(".out.tfevents.")[0]
            for p in run_dir.rglob("*") if p.is_file()
        )  # fmt: skip
        for key in ("wall_time_s", "rss_mb", "output_dir"):
            assert key in metrics
            del metrics[key]
        output = _without_times(result.stdout.replace(str(run_dir), "<run>"))
        error_line = error.stderr.replace(str(tmp_path / kind), "<dir>")
        runs[kind] = (metrics, files, output, result.stderr, error.returncode, error_line)
    fresh, warm = runs["fresh"], runs["warm"]
    assert warm[0] == fresh[0]  # every number, exactly (deterministic runs)
    assert warm[1] == fresh[1] and "metrics.json" in warm[1] and "model.keras" in warm[1]
    assert warm[2] == fresh[2] and any("epoch 2/2" in line for line in warm[2])
    assert (warm[3], fresh[3]) == ("", "")
    assert warm[4] == fresh[4] == 2
    assert warm[5] == fresh[5] and warm[5].startswith(
        "regfw: error: hydra.run.dir=<dir>/run: the run there"
    )


def _check_run(run_dir, penalty_terms):
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["epochs_run"] >= 1 and metrics["wall_time_s"] > 0
    for split in ("train", "validation"):
        assert {"loss", "data_loss", "accuracy"} <= set(metrics[split])
    assert set(metrics["penalty"]) == {"total", *penalty_terms}
    assert metrics["penalty"]["total"] == pytest.approx(
        sum(metrics["penalty"][t] for t in penalty_terms)
    )
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    train_tags = event_tags(run_dir / "train")
    for tag in ["epoch_loss", "epoch_accuracy", "data_loss", "penalty/total", "config"]:
        assert tag in train_tags
    for term in penalty_terms:
        assert f"penalty/{term}" in train_tags
    histograms = [t for t in train_tags if t.endswith("/histogram")]
    assert histograms, train_tags
    _check_histograms(run_dir, histograms)
    validation = event_scalars(run_dir / "validation")
    assert validation["data_loss"][-1][1] == pytest.approx(metrics["validation"]["data_loss"])
    assert validation["epoch_loss"][-1][1] == pytest.approx(metrics["validation"]["loss"])
    return metrics


def _check_histograms(run_dir, tags):
    """The last epoch's histograms are the final weights' (one per weight, every entry counted)."""
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    weights = {f"{w.path}/histogram": np.asarray(w.numpy()) for w in model.weights}
    weights = {tag: w for tag, w in weights.items() if not tag.startswith("penalty_state/")}
    assert sorted(tags) == sorted(weights)
    acc = EventAccumulator(str(run_dir / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    for tag, w in weights.items():
        buckets = tensor_util.make_ndarray(acc.Tensors(tag)[-1].tensor_proto)
        assert buckets.shape == (30, 3) and buckets[:, 2].sum() == w.size
        assert buckets[0, 0] == pytest.approx(w.min()) and buckets[-1, 1] == pytest.approx(w.max())


@pytest.mark.parametrize(
    "data", [np.arange(7.0), np.full((3, 4), 0.25), np.array([1.0]), np.zeros(0),
             np.random.default_rng(0).normal(size=(64, 33)).astype(np.float32)],
    ids=["arange", "constant", "one", "empty", "normal"],
)  # fmt: skip
def test_histogram_buckets_are_tensorflows(data):
    import tensorflow as tf
    from tensorboard.plugins.histogram.summary_v2 import _buckets

    from regfw.training.events import histogram_buckets

    expected = _buckets(tf.constant(data), tf.constant(30)).numpy()
    np.testing.assert_allclose(histogram_buckets(data), expected, rtol=1e-12, atol=0)


def test_a_stacks_histograms_are_each_jobs_own():
    from regfw.training.events import histogram_buckets, stacked_histogram_buckets

    rng = np.random.default_rng(3)
    data = rng.normal(size=(6, 4, 33)).astype(np.float32)
    data[1, 0, 0] = np.nan  # a diverged job
    data[2] = 0.25  # a constant weight
    data[3, :, :5] = np.inf
    data[4, 0, 0] = data[4].max() + 1.0  # one far from the rest: the last bucket holds it
    stacked = stacked_histogram_buckets(data)
    assert stacked.shape == (6, 30, 3)
    for job in range(6):
        np.testing.assert_array_equal(stacked[job], histogram_buckets(data[job]))
    assert stacked[1, :, 2].sum() == 4 * 33 - 1 and stacked[4, -1, 2] == 1
    np.testing.assert_array_equal(stacked_histogram_buckets(np.zeros((2, 0))), np.zeros((2, 30, 3)))


def test_event_records_and_tensors_are_tensorboards_bytes():
    from tensorboard.summary.writer.record_writer import RecordWriter
    from tensorboard.util import tensor_util

    from regfw.training import events

    payloads = [b"", b"x", bytes(range(256)) * 9]
    buffer = io.BytesIO()
    for data in payloads:
        RecordWriter(buffer).write(data)
    assert b"".join(events.record(d) for d in payloads) == buffer.getvalue()
    for value in (0.0, -1.5, 1e-30, float("inf"), float("nan"), 3.14159):
        expected = tensor_util.make_tensor_proto(np.float32(value)).SerializeToString()
        assert events._scalar_tensor(value).SerializeToString() == expected
    for array in (np.zeros((30, 3)), np.arange(90.0).reshape(30, 3) / 7, np.ones(4)):
        expected = tensor_util.make_tensor_proto(array, dtype=np.float64).SerializeToString()
        assert events._float64_tensor(array).SerializeToString() == expected


def test_default_run(tmp_path, backend):
    result = run_train(f"trainer.backend={backend}", cwd=tmp_path, fresh=True)
    assert result.returncode == 0, result.stderr
    assert "libtpu" not in result.stdout + result.stderr  # JAX's note on machines without a TPU
    (run_dir,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    metrics = _check_run(run_dir, ["orthogonal"])
    assert metrics["epochs_run"] == 10
    assert metrics["validation"]["accuracy"] > 0.9  # breast cancer is easy; the model learned
    assert metrics["objective"]["name"] == "val_data_loss"


def test_clip_run_with_sgd(tmp_path):
    import keras

    run_dir = tmp_path / "run"
    # Bounds of +-0.1, inside the initial weights' range: the clip penalty is not 0.
    result = run_train(
        "penalty=clip", "penalty.lower=-0.1", "penalty.upper=0.1", "optimizer=sgd",
        "optimizer.learning_rate=0.01", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = _check_run(run_dir, ["clip"])
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "lower: -0.1" in config and "name: sgd" in config
    model = keras.saving.load_model(run_dir / "model.keras")
    assert type(model.optimizer).__name__ == "SGD"
    assert model.optimizer.get_config()["learning_rate"] == pytest.approx(0.01)
    weights = [v.numpy().astype(np.float64) for v in model.trainable_weights]
    expected = 0.01 * sum(np.sum((w - np.clip(w, -0.1, 0.1)) ** 2) for w in weights)
    assert expected > 1e-3
    assert metrics["penalty"]["clip"] == pytest.approx(expected, rel=1e-5)


# seed_clip runs with bounds of +-0.05 instead of the article's +-1: trained weights stay inside
# [-1, 1], where the clip penalty is 0 and any formula would agree with it.
EXPERIMENTS = [
    ("seed_clip", "clip", ["penalty.lower=-0.05", "penalty.upper=0.05"]),
    ("seed_sparsity", "l1", []),
    ("seed_orthogonal", "orthogonal", []),
]


@pytest.fixture(scope="module")
def article_runs(tmp_path_factory):
    """The three experiments' runs, then one plain-Keras process that loads every model.keras.

    experiment -> (the train.py process, its run folder, the loading process, what it loaded).
    The loading process asserts that no regfw module was imported after each load.
    """
    root = tmp_path_factory.mktemp("article")
    runs = {}
    for experiment, _, extra in EXPERIMENTS:
        run_dir = root / experiment
        runs[experiment] = (
            run_dir,
            run_train(f"+experiment={experiment}", *extra, f"hydra.run.dir={run_dir}", cwd=root),
        )
    models = {e: str(d / "model.keras") for e, (d, r) in runs.items() if r.returncode == 0}
    code = (
        "import json, sys, keras\n"
        f"for experiment, path in {models!r}.items():\n"
        "    model = keras.saving.load_model(path)\n"
        "    assert not any(m.startswith('regfw') for m in sys.modules)\n"
        "    weights = {w.path: w.numpy().tolist() for w in model.weights}\n"
        "    print('LOADED ' + json.dumps([experiment, model.input_shape, weights]))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    found = {}
    for line in loaded.stdout.splitlines():
        if line.startswith("LOADED "):
            experiment, input_shape, weights = json.loads(line.removeprefix("LOADED "))
            found[experiment] = input_shape, weights
    return {e: (r, d, loaded, found.get(e)) for e, (d, r) in runs.items()}


# The three runs and their one loading process are made once: these tests on one xdist worker.
@pytest.mark.xdist_group("test_cli")
@pytest.mark.parametrize(
    ("experiment", "term", "extra"), EXPERIMENTS, ids=[e[0] for e in EXPERIMENTS]
)
def test_article_experiments_run_and_reload_in_plain_keras(article_runs, experiment, term, extra):
    result, run_dir, loaded, found = article_runs[experiment]
    assert result.returncode == 0, result.stderr
    metrics = _check_run(run_dir, [term])
    assert loaded.returncode == 0, loaded.stderr
    input_shape, weights = found
    assert input_shape == [None, 10]
    assert list(weights) == ["dense/kernel", "dense/bias", "output/kernel", "output/bias"]
    weights = [np.array(w) for w in weights.values()]
    expected = ARTICLE[experiment](weights)
    assert expected > 1e-4  # a penalty of 0 would match any formula
    assert metrics["penalty"][term] == pytest.approx(expected, rel=1e-5)


def _article_clip(weights, bound=0.05):
    return 0.01 * sum(np.sum((w - np.clip(w, -bound, bound)) ** 2) for w in weights)


def _article_sparsity(weights):
    return 0.001 * sum(np.sum(0.1 * np.abs(w)) for w in weights)


def _article_orthogonal(weights):
    return 0.0001 * sum(np.sum((w.T @ w - np.eye(w.shape[1])) ** 2) for w in weights if w.ndim > 1)


# The article's three penalties, as its loops over model.trainable_weights compute them.
ARTICLE = {
    "seed_clip": _article_clip,
    "seed_sparsity": _article_sparsity,
    "seed_orthogonal": _article_orthogonal,
}
