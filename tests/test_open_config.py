"""Open configuration: one schema per option, Keras's own names, callbacks, `_target_`, layout.

Issue 13: unknown keys are refused even with `+`; every optimizer, activation and configurable
callback Keras offers composes, validates and trains; your classes come in by `_target_`; the
package's layers import only down the data flow; no private Hydra module is imported.
"""

from __future__ import annotations

import ast
import re

import keras
import numpy as np
import pytest

import regfw
from regfw.config import keras_names
from regfw.config.options import group_options, option_defaults
from regfw.config.schema import validate
from regfw.errors import ConfigError
from regfw.training import trainer
from tests.conftest import REPO, one_error_line, read_metrics, run_train

TINY = ["data=synthetic", "data.n_samples=40", "model.units=[4]", "trainer.batch_size=8",
        "trainer.verbose=0", "trainer.histograms=false", "trainer.diagnostics=false"]  # fmt: skip


def test_keras_names_equal_what_the_installed_keras_offers():
    recorded, current = keras_names.load(), keras_names.generate()
    assert recorded == current, (
        "regfw/config/keras_names.json is out of date with the installed Keras: run "
        "python -m regfw.config.keras_names"
    )
    assert {"adam", "sgd", "adamw", "rmsprop", "nadam", "adamax", "adagrad", "adadelta", "ftrl",
            "lion", "lamb"} <= set(recorded["optimizers"])  # fmt: skip
    assert {"early_stopping", "reduce_lr_on_plateau", "terminate_on_nan"} <= set(
        recorded["callbacks"]
    )
    assert "hard_silu" in recorded["activations"] and "huber" in recorded["losses"]


def _one_step(overrides):
    """Composes, validates, builds and trains one step; returns the model and the weights moved."""
    cfg = regfw.compose([*TINY, *overrides])
    validate(cfg)
    keras.utils.set_random_seed(0)
    model, _ = trainer.build(cfg)
    x = np.random.default_rng(0).normal(size=(8, 10)).astype("float32")
    y = np.array([[0.0], [1.0]] * 4, dtype="float32")
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    moved = max(
        np.max(np.abs(a - w.numpy())) for a, w in zip(before, model.trainable_weights, strict=True)
    )
    return model, moved


@pytest.mark.parametrize("name", group_options("optimizer"))
def test_every_keras_optimizer_trains_one_step(fresh_keras, name):
    model, moved = _one_step([f"optimizer={name}"])
    assert type(model.optimizer).__name__.lower() == name
    assert int(model.optimizer.iterations.numpy()) == 1 and moved > 0


@pytest.mark.parametrize("name", keras_names.load()["activations"])
def test_every_keras_activation_trains_one_step(fresh_keras, name):
    model, moved = _one_step([f"model.activation={name}", "optimizer=sgd"])
    assert model.get_layer("dense").activation is keras.activations.get(name)
    assert np.isfinite(moved)


def test_optimizer_arguments_come_from_keras():
    cfg = regfw.compose([*TINY, "optimizer=rmsprop", "optimizer.rho=0.8",
                         "optimizer.learning_rate=0.01"])  # fmt: skip
    optimizer = trainer.build_optimizer(cfg.optimizer)
    assert type(optimizer) is keras.optimizers.RMSprop
    assert optimizer.rho == 0.8 and float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    assert set(option_defaults("optimizer", "rmsprop")) == {
        "name",
        *keras_names.load()["optimizers"]["rmsprop"]["arguments"],
    }
    with pytest.raises(
        ConfigError, match=r"^optimizer\.rhoo=0\.8: no such config key\. Did you mean "
    ):
        validate(regfw.compose([*TINY, "optimizer=rmsprop", "+optimizer.rhoo=0.8"]))
    with pytest.raises(ConfigError, match=r"^optimizer\.rho='x': expected a number$"):
        validate(regfw.compose([*TINY, "optimizer=rmsprop", "optimizer.rho=x"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+trainer.epochz=5"],
            "trainer.epochz=5: no such config key. Did you mean 'trainer.epochs'?",
        ),
        (["+model.unitz=[3]"], "model.unitz=[3]: no such config key. Did you mean 'model.units'?"),
        (["+penalty.scal=1"], "penalty.scal=1: no such config key. Did you mean 'penalty.scale'?"),
        (["+penalty.schedule.every_=2"], "penalty.schedule.every_=2: no such config key."),
        (
            ["+data.n_sample=5"],
            "data.n_sample=5: no such config key. Did you mean 'data.n_samples'?",
        ),
        (["+foo=1"], "foo=1: no such config key."),
        (["model.activation=relux"], "model.activation='relux': expected one of"),
        (["model.units=[a]"], "model.units=['a']: expected a non-empty list of integers >= 1"),
        (
            ["+callbacks@callbacks.stop=early_stopping", "callbacks.stop.monitor=val_acc"],
            "callbacks.stop.monitor='val_acc': expected one of loss, data_loss, accuracy, val_loss",
        ),
        (
            ["+callbacks@callbacks.ck=model_checkpoint"],
            "callbacks.ck.filepath='???': required: give it (callbacks.ck.filepath=...)",
        ),
        (
            ["+callbacks@callbacks.stop=early_stopping", "+callbacks.stop.patiense=3"],
            "callbacks.stop.patiense=3: no such config key. Did you mean 'callbacks.stop.patience'?",
        ),
        (["trainer.monitor=val_penalty"], "trainer.monitor='val_penalty': expected one of"),
    ],
)
def test_unknown_keys_and_names_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(regfw.compose([*TINY, *overrides]))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_keras_callbacks_from_the_config_take_effect(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        *TINY, "trainer.epochs=30", "optimizer.learning_rate=1e-9",
        "+callbacks@callbacks.stop=early_stopping", "callbacks.stop.monitor=val_data_loss",
        "callbacks.stop.patience=2", "callbacks.stop.min_delta=1.0",
        "+callbacks@callbacks.nan=terminate_on_nan", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Nothing improves by 1.0: the first epoch sets the best, two more without improvement stop.
    assert read_metrics(run_dir)["epochs_run"] == 3


def test_reduce_lr_on_plateau_sees_regfw_metrics(fresh_keras, tmp_path):
    cfg = regfw.compose([*TINY, "trainer.epochs=3", "optimizer.learning_rate=1e-9",
                         "+callbacks@callbacks.lr=reduce_lr_on_plateau",
                         "callbacks.lr.monitor=penalty/total", "callbacks.lr.mode=min",
                         "callbacks.lr.patience=0",
                         "callbacks.lr.min_delta=1.0", "callbacks.lr.factor=0.5"])  # fmt: skip
    metrics = regfw.train(cfg, tmp_path)
    assert metrics["status"] == "completed"
    model = regfw.load_model(tmp_path)
    # Plateaus after epochs 1 and 2 (epoch 0 sets the best): 1e-9 halved twice.
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.25e-9, rel=1e-6)


OWN = """
import keras
import numpy as np


def tiny(input_shape, num_classes, width=8):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="output")(hidden))


def blobs(n=60, shift=3.0):
    with open("blobs.txt", "w") as f:
        f.write(str(shift))
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    return rng.normal(size=(n, 4)) + shift * y[:, None], y


class Halving(keras.optimizers.SGD):
    def __init__(self, rate=0.1):
        super().__init__(learning_rate=rate / 2)


class CountEpochs(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(f"{epoch} {logs['penalty/total']:.6g}\\n")
"""
# One YAML file per group option of your own, in a config folder of your own.
OWN_OPTIONS = {
    "model/tiny.yaml": "_target_: mine.tiny\nwidth: 8\n",
    "data/blobs.yaml": (
        "_target_: mine.blobs\ninput_shape: [4]\nnum_classes: 2\nvalidation_split: 0.25\n"
        "shift: 3.0\n"
    ),
    "optimizer/halving.yaml": "_target_: mine.Halving\nrate: 0.1\n",
    "callbacks/count.yaml": "_target_: mine.CountEpochs\npath: epochs.txt\n",
}


def test_your_own_model_data_optimizer_and_callback_by_target(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(OWN)
    for name, text in OWN_OPTIONS.items():
        (tmp_path / "my_conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "my_conf" / name).write_text(text)
    run_dir = tmp_path / "run"
    result = run_train(
        "hydra.searchpath=[file://my_conf]", "model=tiny", "model.width=5", "data=blobs",
        "data.shift=4.0", "optimizer=halving", "optimizer.rate=0.2",
        "+callbacks@callbacks.count=count", "trainer.epochs=2", "trainer.verbose=0",
        "trainer.histograms=false", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(tmp_path)  # mine.py imports from the working directory
    model = regfw.load_model(run_dir)
    assert model.get_layer("hidden").units == 5
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.1)
    lines = (tmp_path / "epochs.txt").read_text().split()
    assert lines[0::2] == ["0", "1"] and float(lines[-1]) == pytest.approx(
        read_metrics(run_dir)["penalty"]["total"], rel=1e-5
    )
    assert (tmp_path / "blobs.txt").read_text() == "4.0"  # the data function got its argument
    broken = run_train("hydra.searchpath=[file://my_conf]", "model=tiny", "+model.typo=1",
                       cwd=tmp_path)  # fmt: skip
    assert broken.returncode == 2
    line = one_error_line(broken)
    assert "model._target_='mine.tiny': could not build it:" in line and "typo" in line


def test_no_private_hydra_module_is_imported():
    sources = [*REPO.glob("regfw/**/*.py"), *REPO.glob("hydra_plugins/**/*.py"),
               REPO / "train.py"]  # fmt: skip
    found = [str(p) for p in sources if re.search(r"hydra\._internal|hydra\.\_internal",
                                                  p.read_text())]  # fmt: skip
    assert found == []


# The data flow, bottom to top: each package may import the ones listed (and itself).
LAYERS = {
    "config": {"config"},
    "runs": {"runs", "config"},
    "penalties": {"penalties"},
    "build": {"build", "penalties", "config"},
    "training": {"training", "build", "penalties", "runs", "config"},
    "sweeps": {"sweeps", "training", "runs", "config"},
}
FOUNDATION = {"registry", "errors", "penalties"}  # `regfw.penalties` is public API


def _regfw_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "regfw":
            yield from (f"regfw.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("regfw"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("regfw"))


def test_packages_import_only_down_the_data_flow():
    wrong = []
    for package, allowed in LAYERS.items():
        folder = REPO / "regfw" / package
        assert (folder / "__init__.py").read_text().lstrip().startswith('"""'), package
        assert "May import" in (folder / "__init__.py").read_text(), package
        for path in folder.glob("*.py"):
            for module in _regfw_imports(path):
                parts = module.split(".")
                target = parts[1] if len(parts) > 1 else "regfw"
                if target not in allowed | FOUNDATION:
                    wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert wrong == []


def test_readme_config_table_lists_every_options_keys():
    readme = (REPO / "README.md").read_text()
    table = readme.split("| group | options | keys |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[2]
    missing = []
    for group in ("model", "data", "trainer", "constraint"):
        for option in group_options(group):
            keys = option_defaults(group, option)
            for key in keys:
                if key != "name" and f"`{key}`" not in rows.get(group, ""):
                    missing.append(f"{group}/{option}: {key}")
    for key in option_defaults("penalty", "orthogonal"):
        if key != "name" and f"`{key}`" not in rows["penalty"]:
            missing.append(f"penalty: {key}")
    assert missing == []


def test_readme_worked_example_runs(tmp_path, monkeypatch):
    """The README's "Your own model" block, run as written (one fast epoch added)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Your own model, data, optimizer or callback\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    fast = "trainer.epochs=1 trainer.verbose=0 hydra.run.dir=run"
    script = block.replace("python train.py ", f"python {REPO / 'train.py'} {fast} ")
    import subprocess
    import sys

    done = subprocess.run(["bash", "-euc", script.replace("python ", f"{sys.executable} ")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_metrics(tmp_path / "run")["status"] == "completed"
    monkeypatch.chdir(tmp_path)  # my_models.py imports from the working directory
    assert regfw.load_model(tmp_path / "run").get_layer("hidden").units == 16
