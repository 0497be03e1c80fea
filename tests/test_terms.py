"""Selectors, several penalty terms, scale schedules, hard constraints, plugins and explain."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import regfw
from regfw.build.selection import SelectionError
from regfw.config.options import group_options
from regfw.config.schedules import multiplier
from regfw.config.schema import validate
from tests import references
from tests.conftest import event_scalars, read_metrics, run_train, train_step_function

FAST = ["data=synthetic", "data.n_samples=200", "trainer.verbose=0", "trainer.histograms=false"]


def _penalized(model):
    return [v.path for v in model.trainable_variables if v.regularizer is not None]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["penalty=l1"], ["dense/kernel", "dense/bias", "output/kernel", "output/bias"]),
        (["penalty=l1", "penalty.include=[*/kernel]"], ["dense/kernel", "output/kernel"]),
        (["penalty=l1", "penalty.exclude=[output/*]"], ["dense/kernel", "dense/bias"]),
        (["penalty=l1", "penalty.include=[dense/*]", "penalty.min_ndim=2"], ["dense/kernel"]),
        (["penalty=orthogonal"], ["dense/kernel", "output/kernel"]),
        (
            ["penalty=orthogonal", "penalty.min_ndim=0"],
            ["dense/kernel", "dense/bias", "output/kernel", "output/bias"],
        ),
    ],
)
def test_selectors(fresh_keras, overrides, expected):
    assert _penalized(regfw.build_model(regfw.compose(overrides))) == expected


def test_selector_matching_nothing_names_patterns_and_paths(fresh_keras):
    cfg = regfw.compose(["penalty=l2", "penalty.include=[conv*]", "penalty.exclude=[x]"])
    with pytest.raises(SelectionError) as error:
        regfw.build_model(cfg)
    message = str(error.value)
    assert "include=['conv*']" in message and "exclude=['x']" in message
    assert "dense/kernel (30, 64)" in message and "output/bias (1,)" in message


def test_two_terms_on_one_weight_add_up(fresh_keras):
    from regfw import penalties

    cfg = regfw.compose(
        [
            "penalty=l2",
            "penalty.scale=0.5",
            "+penalty@penalties.sparse=l1",
            "penalties.sparse.alpha=1.0",
            "penalties.sparse.scale=0.25",
        ]
    )
    model = regfw.build_model(cfg)
    kernel = model.get_layer("dense").kernel
    assert isinstance(kernel.regularizer, penalties.Combined)
    w = kernel.numpy()
    assert float(kernel.regularizer(kernel)) == pytest.approx(
        0.5 * np.sum(w**2) + 0.25 * np.sum(np.abs(w)), rel=1e-5
    )
    expected = sum(
        0.5 * np.sum(v.numpy() ** 2) + 0.25 * np.sum(np.abs(v.numpy()))
        for v in model.trainable_variables
    )
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_each_term_is_logged_and_they_sum_to_the_total(tmp_path, fresh_keras):
    cfg = regfw.compose(
        [*FAST, "trainer.epochs=2", "penalty=l1", "penalty.include=[dense/kernel]",
         "+penalty@penalties.rest=orthogonal", "penalties.rest.exclude=[dense/*]"]
    )  # fmt: skip
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert set(metrics["penalty"]) == {"l1", "rest", "total"}
    assert metrics["penalty"]["total"] == pytest.approx(
        metrics["penalty"]["l1"] + metrics["penalty"]["rest"]
    )
    import keras

    weights = {v.path: v.numpy() for v in keras.saving.load_model(tmp_path / "model.keras").weights}
    assert metrics["penalty"]["l1"] == pytest.approx(
        1e-3 * 0.1 * np.abs(weights["dense/kernel"]).sum(), rel=1e-5
    )
    out = weights["output/kernel"]
    assert metrics["penalty"]["rest"] == pytest.approx(
        1e-4 * (out.T @ out - 1.0).item() ** 2, rel=1e-4
    )
    events = event_scalars(tmp_path / "train")
    for tag in [
        "penalty/l1",
        "penalty/rest",
        "penalty/total",
        "penalty_scale/l1",
        "penalty_scale/rest",
    ]:
        assert len(events[tag]) == 2


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"name": "constant"}, [1, 1, 1, 1, 1, 1]),
        ({"name": "warmup", "epochs": 4}, [0, 0.25, 0.5, 0.75, 1, 1]),
        ({"name": "step", "every": 2, "factor": 0.1}, [1, 1, 0.1, 0.1, 0.01, 0.01]),
        ({"name": "step", "every": 3, "factor": 0.0}, [1, 1, 1, 0, 0, 0]),
        (
            {"name": "cosine", "epochs": 4, "final": 0.2},
            [
                1,
                0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2,
                0.6,
                0.2 + 0.8 * (1 + math.cos(3 * math.pi / 4)) / 2,
                0.2,
                0.2,
            ],
        ),
    ],
)
def test_schedule_multipliers(schedule, expected):
    assert [multiplier(schedule, e) for e in range(6)] == pytest.approx(expected)


def test_schedule_sets_the_scale_each_epoch(tmp_path, fresh_keras):
    cfg = regfw.compose(
        [*FAST, "trainer.epochs=4", "penalty=l2", "penalty.scale=0.01",
         "penalty.schedule.name=warmup", "penalty.schedule.epochs=2"]
    )  # fmt: skip
    metrics = regfw.train(cfg, output_dir=tmp_path)
    scales = [v for _, v in event_scalars(tmp_path / "train")["penalty_scale/l2"]]
    assert scales == pytest.approx([0.0, 0.005, 0.01, 0.01])
    assert metrics["penalty_scale"]["l2"] == pytest.approx(0.01)
    penalties = [v for _, v in event_scalars(tmp_path / "train")["penalty/l2"]]
    assert penalties[0] == 0.0 and penalties[1] > 0


def test_schedule_changes_the_scale_without_retracing(fresh_keras):
    # The weights stay put (learning rate 1e-30), so each epoch's loss is its data loss plus the
    # epoch's scale times the same penalty; the train step is traced once for all three.
    import keras

    from regfw.build import data
    from regfw.training import trainer
    from regfw.training.callbacks import PenaltyMonitor

    cfg = regfw.compose(
        [*FAST, "trainer.epochs=3", "penalty=l2", "penalty.scale=0.01", "optimizer=sgd",
         "optimizer.learning_rate=1e-30", "penalty.schedule.name=warmup",
         "penalty.schedule.epochs=2"]
    )  # fmt: skip
    keras.utils.set_random_seed(0)
    split = data.load(cfg.data, seed=0)
    model, terms = trainer.build(cfg)
    value = sum(np.sum(v.numpy().astype(np.float64) ** 2) for v in model.trainable_variables)
    history = trainer.fit(cfg, model, split, [PenaltyMonitor(terms)]).history
    scales = [0.0, 0.005, 0.01]  # warmup over 2 epochs: scale * min(1, e / 2)
    assert history["penalty_scale/l2"] == pytest.approx(scales)
    added = np.subtract(history["loss"], history["data_loss"])
    np.testing.assert_allclose(added, np.multiply(scales, value), rtol=1e-5, atol=1e-7)
    assert train_step_function(model).experimental_get_tracing_count() == 1


def test_penalty_none_with_only_other_terms(tmp_path, fresh_keras):
    import keras

    cfg = regfw.compose([*FAST, "trainer.epochs=1", "penalty=none", "+penalty@penalties.decay=l2",
                         "penalties.decay.scale=0.01", "penalties.decay.min_ndim=2"])  # fmt: skip
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert set(metrics["penalty"]) == {"decay", "total"}
    model = keras.saving.load_model(tmp_path / "model.keras")
    kernels = [v.numpy().astype(np.float64) for v in model.trainable_weights if len(v.shape) > 1]
    expected = 0.01 * sum(np.sum(w**2) for w in kernels)
    assert metrics["penalty"]["decay"] == metrics["penalty"]["total"]
    assert metrics["penalty"]["decay"] == pytest.approx(expected, rel=1e-5)
    added = metrics["validation"]["loss"] - metrics["validation"]["data_loss"]
    assert added == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("option", group_options("constraint"))
def test_every_constraint_option_composes_validates_and_attaches(fresh_keras, option):
    import keras

    cfg = regfw.compose([f"+constraint@constraints.c={option}"])
    validate(cfg)
    model = regfw.build_model(cfg)
    constrained = {v.path: v.constraint for v in model.trainable_variables if v.constraint}
    # clip and non_neg apply to every weight; max_norm and unit_norm to matrices (min_ndim 2).
    every = ["dense/kernel", "dense/bias", "output/kernel", "output/bias"]
    assert list(constrained) == (every if option in ("clip", "non_neg") else every[::2])
    w = np.random.default_rng(0).normal(0.0, 3.0, size=(30, 64)).astype("float32")
    projected = keras.ops.convert_to_numpy(
        constrained["dense/kernel"](keras.ops.convert_to_tensor(w))
    )
    expected = {
        "clip": np.clip(w, -1.0, 1.0),
        "max_norm": w * np.minimum(1.0, 3.0 / np.linalg.norm(w, axis=0)),
        "non_neg": np.maximum(w, 0.0),
        "unit_norm": w / np.linalg.norm(w, axis=0),
    }[option]
    np.testing.assert_allclose(projected, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("constraint", "check"),
    [
        (
            [
                "+constraint@constraints.c=clip",
                "constraints.c.lower=-0.05",
                "constraints.c.upper=0.05",
            ],
            lambda w: np.all(np.abs(w) <= 0.05 + 1e-7),
        ),
        (
            ["+constraint@constraints.c=max_norm", "constraints.c.max_value=0.5"],
            lambda w: np.all(np.linalg.norm(w, axis=0) <= 0.5 + 1e-5),
        ),
        (
            ["+constraint@constraints.c=unit_norm"],
            lambda w: np.allclose(np.linalg.norm(w, axis=0), 1.0, atol=1e-5),
        ),
        (["+constraint@constraints.c=non_neg"], lambda w: np.all(w >= 0)),
    ],
)
def test_constraints_hold_after_training(tmp_path, fresh_keras, constraint, check):
    cfg = regfw.compose(
        [
            *FAST,
            "trainer.epochs=1",
            "penalty=none",
            "optimizer.learning_rate=0.05",
            *constraint,
            "constraints.c.include=[dense/kernel]",
        ]
    )
    regfw.train(cfg, output_dir=tmp_path)
    import keras

    weights = {v.path: v.numpy() for v in keras.saving.load_model(tmp_path / "model.keras").weights}
    assert check(weights["dense/kernel"])
    assert not check(weights["output/kernel"])  # not selected, so not projected


def test_adamw_weight_decay_leaves_biases_alone(fresh_keras):
    import keras

    results = {}
    for decay in (0.0, 0.5):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        cfg = regfw.compose(
            [
                *FAST,
                "penalty=none",
                "optimizer=adamw",
                "optimizer.learning_rate=0.1",
                f"optimizer.weight_decay={decay}",
            ]
        )
        model = regfw.build_model(cfg)
        x = np.random.default_rng(0).normal(size=(16, 10)).astype("float32")
        model.train_on_batch(x, np.ones((16, 1), "float32"))
        results[decay] = {v.path: v.numpy() for v in model.trainable_variables}
    np.testing.assert_array_equal(results[0.0]["dense/bias"], results[0.5]["dense/bias"])
    assert not np.allclose(results[0.0]["dense/kernel"], results[0.5]["dense/kernel"])


PLUGIN = '''
import keras
from regfw import penalties


@penalties.register("cubic")
def cubic(w, power=3.0):
    """sum(|w|^power)."""
    return keras.ops.sum(keras.ops.abs(w) ** power)
'''


@pytest.mark.parametrize("entry", ["my_penalties.py", "my_penalties"])
def test_user_plugin_penalty_from_the_command_line(tmp_path, fresh_keras, entry):
    (tmp_path / "my_penalties.py").write_text(PLUGIN)
    run_dir = tmp_path / "run"
    result = run_train(
        f"plugins=[{entry}]", "penalty=custom", "penalty.name=cubic", "+penalty.power=2.5",
        "penalty.scale=0.01", "penalty.min_ndim=2", *FAST, "trainer.epochs=1", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(run_dir)
    import keras

    # The trained weights as plain Keras reads them from model.keras (without the plugin).
    saved = keras.saving.load_model(run_dir / "model.keras")
    weights = {v.path: v.numpy().astype(np.float64) for v in saved.weights}
    expected = 0.01 * sum(
        np.sum(np.abs(np.array(weights[k])) ** 2.5) for k in ("dense/kernel", "output/kernel")
    )
    assert metrics["penalty"]["cubic"] == pytest.approx(expected, rel=1e-5)


def test_missing_plugin_is_a_clear_error(tmp_path):
    result = run_train(
        "plugins=[nowhere.py]",
        "penalty=custom",
        "penalty.name=cubic",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "plugins='nowhere.py': no such file" in result.stderr


def test_unregistered_custom_name_is_a_clear_error(tmp_path):
    result = run_train(
        "penalty=custom", "penalty.name=cubc", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Unknown penalty 'cubc'" in result.stderr and "Available:" in result.stderr


def _explained_rows(out: str) -> dict[tuple[str, str], list[str]]:
    """(term, weight path) -> the words of its row in explain's output."""
    rows, term = {}, None
    for line in out.splitlines():
        if found := re.match(r"(penalty|constraint) term '(\w+)'", line):
            term = found.group(2)
        elif line.startswith("  ") and not line.startswith("  left out"):
            words = line.split()
            rows[(term, words[0])] = words[1:]
    return rows


def test_explain_lists_terms_weights_and_values(fresh_keras):
    import keras

    from regfw.explain import explain

    cfg = regfw.compose(["penalty=orthogonal", "+penalty@penalties.small=l1",
                         "penalties.small.include=[output/*]", "+constraint@constraints.c=max_norm"])  # fmt: skip
    out = explain(cfg)
    assert "model mlp: 4 trainable weights, 2,049 parameters" in out
    assert (
        "penalty term 'orthogonal': Orthogonal(scale=0.0001), schedule constant; 2 weights, 1,984 parameters"
        in out
    )
    assert (
        "penalty term 'small': L1(scale=0.001, alpha=0.1), schedule constant; 2 weights, 65 parameters"
        in out
    )
    assert "constraint term 'c': max_norm; 2 weights" in out
    assert "weights without a penalty: dense/bias" in out
    # The values: NumPy's formulas on the same initial weights (same seed, a fresh session).
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    weights = {v.path: v.numpy() for v in regfw.build_model(cfg).trainable_variables}
    expected = {
        ("orthogonal", "dense/kernel"): 1e-4 * references.orthogonal(weights["dense/kernel"]),
        ("orthogonal", "output/kernel"): 1e-4 * references.orthogonal(weights["output/kernel"]),
        ("small", "output/kernel"): 1e-4 * np.sum(np.abs(weights["output/kernel"])),
        ("small", "output/bias"): 0.0,  # biases start at 0
    }
    rows = _explained_rows(out)
    assert sorted(rows) == sorted([*expected, ("c", "dense/kernel"), ("c", "output/kernel")])
    for key, value in expected.items():
        shape = " ".join(rows[key][:-2])
        assert shape == str(weights[key[1]].shape) and rows[key][-2] == f"{weights[key[1]].size:,}"
        assert float(rows[key][-1]) == pytest.approx(value, rel=1e-5, abs=1e-12), key  # 6 digits
    total = sum(v for (term, _), v in expected.items() if term == "orthogonal")
    initial = re.search(r"'orthogonal'.*initial penalty (\S+)", out).group(1)
    assert float(initial) == pytest.approx(total, rel=1e-5)
    assert rows[("c", "dense/kernel")] == ["(30,", "64)", "1,920"]  # constraints: no value
