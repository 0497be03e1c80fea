"""Every failure is one line with a documented exit code, never a traceback, and writes nothing.

The fuzz test feeds malformed overrides through the real command line; the others cover the
failures that need a file, a plugin or another command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml

from regfw.errors import ConfigError
from tests.conftest import REPO, one_error_line, read_metrics, run_train, snapshot

SMALL = ["data=synthetic", "data.n_samples=200", "trainer.epochs=2", "trainer.histograms=false",
         "trainer.verbose=0"]  # fmt: skip

# (overrides, texts the one error line must hold). Types, ranges, unknown keys and options,
# empty values, huge numbers, Hydra-level mistakes; every sweep value is checked too.
MALFORMED = [
    (["penalty=orthogonl"], ["penalty=orthogonl", "Did you mean 'orthogonal'?", "Available: clip"]),
    (["model=mlpp"], ["model=mlpp", "Did you mean 'mlp'?"]),
    (["data=digitz"], ["data=digitz", "Did you mean 'digits'?"]),
    (["optimizer=adamm"], ["optimizer=adamm", "Did you mean 'adam'?"]),
    (["trainer=fast"], ["trainer=fast", "no such option in group 'trainer'"]),
    (["penalty.scal=1e-4"], ["penalty.scal", "Did you mean 'penalty.scale'?"]),
    (["trainer.epochz=3"], ["trainer.epochz", "Did you mean 'trainer.epochs'?"]),
    (["foo=1"], ["foo: no such config key", "Keys here: model, data, penalty"]),
    (["model.unitz=[3]"], ["model.unitz", "Did you mean 'model.units'?"]),
    (["penalty.scale=-1"], ["penalty.scale=-1", ">= 0"]),
    (["penalty.scale=inf"], ["penalty.scale=inf", "finite"]),
    (["penalty.scale=nan"], ["penalty.scale=nan", "finite"]),
    (["penalty.scale=lots"], ["penalty.scale='lots'", "finite number"]),
    (["penalty.scale=1e39"], ["penalty.scale=1e+39", "float32's range"]),
    (["penalty.scale=-1e400"], ["penalty.scale=-inf", "finite"]),
    (["penalty.scale="], ["penalty.scale='", "finite number"]),
    (["penalty.scale=[1]"], ["penalty.scale=[1]", "finite number"]),
    (["penalty.scale=true"], ["penalty.scale=True", "finite number"]),
    (["penalty=clip", "penalty.lower=0.5", "penalty.upper=-0.5"], ["lower <= upper"]),
    (["penalty=l1", "penalty.alpha=-1"], ["penalty.alpha=-1", ">= 0"]),
    (["penalty=srip", "penalty.iterations=0"], ["penalty.iterations=0", "integer >= 1"]),
    (["penalty=srip", "penalty.iterations=2.5"], ["penalty.iterations=2.5", "integer"]),
    (["penalty=keras_orthogonal", "penalty.mode=diagonal"], ["penalty.mode='diagonal'", "rows"]),
    (["penalty.schedule.name=linear"], ["penalty.schedule.name='linear'", "warmup"]),
    (["penalty.schedule.name=warmup", "penalty.schedule.epochs=0"], ["schedule.epochs=0"]),
    (["penalty.include=dense"], ["penalty.include='dense'", "list of glob patterns"]),
    (["penalty.min_ndim=-1"], ["penalty.min_ndim=-1", ">= 0"]),
    (["trainer.epochs=0"], ["trainer.epochs=0", "integer >= 1"]),
    (["trainer.epochs=1.5"], ["trainer.epochs=1.5", "integer"]),
    (["trainer.epochs=ten"], ["trainer.epochs='ten'", "integer"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "integer >= 1"]),
    (["trainer.seed=-1"], ["trainer.seed=-1", ">= 0"]),
    (["trainer.seed=99999999999"], ["trainer.seed=99999999999", "<= 4294967295"]),
    (["trainer.verbose=7"], ["trainer.verbose=7", "expected one of 0, 1, 2"]),
    (["trainer.verbose=loud"], ["trainer.verbose='loud'", "expected one of 0, 1, 2"]),
    (["trainer.resume=maybe"], ["trainer.resume='maybe'", "true or false"]),
    (["trainer.monitor=accuracy"], ["trainer.monitor='accuracy'", "val_data_loss"]),
    (["trainer.strategy=tpu"], ["trainer.strategy='tpu'", "mirrored"]),
    (["trainer.precision=float64"], ["trainer.precision='float64'", "mixed_float16"]),
    (["trainer.checkpoint_every=-1"], ["trainer.checkpoint_every=-1", ">= 0"]),
    (["trainer.class_weight={0:1,3:2}"], ["trainer.class_weight", "class 3"]),
    (["trainer.class_weight={0:-1}"], ["trainer.class_weight", "weight > 0"]),
    (["trainer.class_weight=heavy"], ["trainer.class_weight='heavy'", "balanced"]),
    (["optimizer.learning_rate=-0.1"], ["optimizer.learning_rate=-0.1", "> 0"]),
    (["optimizer.learning_rate=0"], ["optimizer.learning_rate=0", "> 0"]),
    (["optimizer=sgd", "optimizer.momentum=1"], ["optimizer.momentum=1", "< 1"]),
    (["data.validation_split=0"], ["data.validation_split=0", "> 0 and < 1"]),
    (["data.validation_split=1.5"], ["data.validation_split=1.5", "< 1"]),
    (["data.input_shape=[]"], ["data.input_shape=[]", "non-empty list"]),
    (["data.num_classes=1"], ["data.num_classes=1", "integer >= 2"]),
    (["model.units=[]"], ["model.units=[]", "non-empty list"]),
    (["model.units=[0]"], ["model.units=[0]", "integers >= 1"]),
    (["model.dropout=1"], ["model.dropout=1", "< 1"]),
    (["model.activation=relux"], ["model.activation='relux'", "Did you mean 'relu'?"]),
    (["model=cnn"], ["model", "needs image data", "data=breast_cancer"]),
    (["model=rnn", "data=digits"], ["recurrent net needs sequence data"]),
    (["data=file"], ["data.path=null", "expected the path of a .npz or .csv file"]),
    (["data=file", "data.path=missing.npz"], ["data.path='missing.npz'", "no such file"]),
    (["plugins=[]", "penalty=custom"], ["penalty.name='???'", "registered penalty"]),
    (["+constraint@constraints.c=clip", "constraints.c.lower=2"], ["lower <= upper"]),
    (["+penalty@penalties.a=l1", "+penalty@penalties.a=l2"], ["Multiple values for"]),
    (["+penalty@penalties.orthogonal=l1"], ["penalties.orthogonal", "taken by penalty"]),
    (["+penalty@penalties.total=l1"], ["penalties.total", "'total' is reserved"]),
    (["hydra/launcher=nope"], ["hydra/launcher=nope", "no such option in group 'hydra/launcher'"]),
    (["~penalty"], ["penalty=null", "every run needs the penalty group", "penalty=none"]),
    (["penalty.scale=["], ["cannot parse the command line"]),
    (["-m", "penalty=l1,orthogonl"], ["penalty=orthogonl", "Did you mean 'orthogonal'?"]),
    (["-m", "penalty.scale=1e-3,-2"], ["penalty.scale=-2", ">= 0"]),
    (["-m", "trainer.epochs=1,2,zero"], ["trainer.epochs='zero'", "integer"]),
]


def test_malformed_overrides_are_one_line_exit_2_and_write_nothing(tmp_path):
    """At least 50 malformed command lines, each aimed at an existing run folder."""
    assert len(MALFORMED) >= 50
    run_dir = tmp_path / "run"
    first = run_train(*SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = snapshot(tmp_path)

    def attempt(case: tuple[list[str], list[str]]) -> str | None:
        args, texts = case
        flags = [a for a in args if a.startswith("-") and "=" not in a]
        folder = "hydra.sweep.dir" if "-m" in flags else "hydra.run.dir"
        overrides = [a for a in args if a not in flags]
        result = run_train(*flags, f"{folder}={run_dir}", "trainer.resume=true", *overrides,
                           cwd=tmp_path, timeout=120)  # fmt: skip
        try:
            assert result.returncode == 2, f"exit code {result.returncode}"
            line = one_error_line(result)
            missing = [t for t in texts if t not in line]
            assert not missing, f"{missing} not in {line!r}"
        except AssertionError as error:
            return f"{' '.join(args)}: {error}\n{result.stderr[-2000:]}"
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(attempt, MALFORMED) if f]
    assert not failures, "\n".join(failures)
    assert snapshot(tmp_path) == before


def test_traceback_only_with_hydra_full_error(tmp_path):
    args = ["penalty.include=[nothing]", *SMALL, f"hydra.run.dir={tmp_path / 'run'}"]
    quiet = run_train(*args, cwd=tmp_path)
    assert quiet.returncode == 2
    assert "matches no weight" in one_error_line(quiet)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    loud = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert loud.returncode != 0
    assert "Traceback" in loud.stderr and "SelectionError" in loud.stderr


def test_offline_keras_dataset_says_how_to_give_a_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["KERAS_HOME"] = str(tmp_path / "keras")  # no cached download
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "data=mnist", "model=cnn",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    line = one_error_line(result)
    assert "data.path=null: keras.datasets.mnist.load_data() could not download the data" in line
    assert "set data.path=<file>.npz" in line
    assert not (tmp_path / "run").exists()  # the folder Hydra made for it is gone again


PLUGINS = {
    "taken.py": ("from regfw import penalties\n\n\n@penalties.register('l1')\n"
                 "def l1_again(w):\n    return w\n", 4, "ValueError: The penalty name 'l1' is "
                 "already registered"),
    "raises.py": ("import math\n\nVALUE = math.sqrt(-1)\n", 3, "ValueError: math domain error"),
    "exits.py": ("import sys\n\nsys.exit(0)\n", 3, "called sys.exit(0) while being imported"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_a_broken_plugin_is_one_line_naming_its_file_and_line(tmp_path, name):
    source, line_no, message = PLUGINS[name]
    (tmp_path / name).write_text(source)
    result = run_train(f"plugins=[{name}]", *SMALL, f"hydra.run.dir={tmp_path / 'run'}",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2  # never 0: sys.exit(0) in a plugin is not a finished run
    line = one_error_line(result)
    assert f"plugins=[{name}]: {tmp_path / name}, line {line_no} " in line and message in line
    assert not (tmp_path / "run").exists()


def test_two_plugin_files_with_one_name_are_two_plugins(tmp_path, fresh_keras):
    """Issue 10, item 3: plugins are keyed by their resolved path, not by the file's name."""
    import regfw
    from regfw import penalties
    from regfw.build import plugins

    for folder, name in (("a", "from_a"), ("b", "from_b")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "my_pen.py").write_text(
            f"from regfw import penalties\n\n\n@penalties.register('{name}')\n"
            "def _(w):\n    return w.sum()\n"
        )
    plugins.load([str(tmp_path / "a" / "my_pen.py")])
    plugins.load([str(tmp_path / "b" / "my_pen.py")])
    plugins.load([str(tmp_path / "a" / "my_pen.py")])  # the same file again: nothing happens
    assert {"from_a", "from_b"} <= set(penalties.available())
    assert regfw.compose(["penalty=custom", "penalty.name=from_b"]).penalty.name == "from_b"


def test_explain_errors_and_help(tmp_path):
    def explain(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "regfw.explain", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    helped = explain("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m regfw.explain")
    for args, text in (
        (["penalty.scale=1e-4,1e-3"], "explain describes one config, and this is a sweep"),
        (["penalty.scale=["], "cannot parse the command line"),
        (["penalty=orthogonl"], "Did you mean 'orthogonal'?"),
        (["penalty.include=[nothing]"], "matches no weight"),
    ):
        result = explain(*args)
        assert result.returncode == 2 and text in one_error_line(result), args


SCALES = "penalty.scale=1e-4,1e-3,1e-2"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished 3-job sweep (copy it before changing anything): the process and its folder."""
    root = tmp_path_factory.mktemp("sweep")
    result = run_train("-m", *SMALL, SCALES, f"hydra.sweep.dir={root / 'sweep'}", cwd=root)
    return result, root / "sweep"


def _sweep_copy(finished_sweep, tmp_path):
    result, finished = finished_sweep
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep)
    return sweep


# The sweep is made once: the tests that use it on one xdist worker.
@pytest.mark.xdist_group("test_errors")
def test_report_survives_corrupt_job_folders(finished_sweep, tmp_path):
    sweep = _sweep_copy(finished_sweep, tmp_path)
    (sweep / "0" / "metrics.json").write_text('{"status": "compl')
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("penalty.scale: [unclosed\n")
    reported = subprocess.run([sys.executable, "-m", "regfw.report", str(sweep)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert reported.returncode == 0, reported.stderr
    rows = {row["job"]: row for row in _csv(sweep / "summary.csv")}
    assert rows["0"]["status"] == "failed"
    assert rows["0"]["error"].startswith("unreadable metrics.json: JSONDecodeError")
    assert rows["1"]["status"] == "failed"
    assert rows["1"]["error"].startswith("unreadable .hydra record:")
    assert rows["2"]["status"] == "ok"
    assert float(rows["2"]["validation/data_loss"]) == pytest.approx(
        read_metrics(sweep / "2")["validation"]["data_loss"]
    )


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_data_checks_single_class_not_a_zip_and_empty_csv(tmp_path):
    import regfw
    from regfw.build import data

    np.savez(tmp_path / "one.npz", x=np.ones((20, 3)), y=np.zeros(20))
    (tmp_path / "text.npz").write_text("x,y\n1,0\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b,label\n")
    cases = {
        "one.npz": "every label is 0: a classifier needs at least two classes",
        "text.npz": "is not a .npz file (a .npz is a zip archive)",
        "empty.csv": "the file is empty; expected a header row and rows",
        "header.csv": "the file has a header row but no data rows",
    }
    for name, message in cases.items():
        cfg = regfw.compose(["data=file", f"data.path={tmp_path / name}", "data.input_shape=[3]"])
        with pytest.raises(ConfigError) as error:
            data.load(cfg.data, seed=0)
        assert str(error.value).startswith(f"data.path='{tmp_path / name}': "), str(error.value)
        assert message in str(error.value)


@pytest.mark.xdist_group("test_errors")
def test_a_rejected_sweep_writes_nothing_into_an_earlier_sweep(finished_sweep, tmp_path):
    sweep = _sweep_copy(finished_sweep, tmp_path)
    before = snapshot(sweep)
    again = run_train("-m", *SMALL, SCALES, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a sweep (3 job folders); finish it with trainer.resume=true" in (
        one_error_line(again)
    )
    assert snapshot(sweep) == before
    overrides = yaml.safe_load((sweep / "1" / ".hydra" / "overrides.yaml").read_text())
    assert "penalty.scale=0.001" in overrides
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "completed"
