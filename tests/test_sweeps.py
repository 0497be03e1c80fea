"""Multiruns through `python train.py -m`: a grid, joblib, Optuna, a failing job, TensorBoard."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.browser import tensorboard
from tests.conftest import REPO, read_metrics, run_train

# Its module-scoped runs are made once: the whole module on one xdist worker.
pytestmark = pytest.mark.xdist_group("test_sweeps")

TINY = [
    "data=synthetic",
    "data.n_samples=200",
    "trainer.epochs=2",
    "trainer.verbose=0",
    "trainer.histograms=false",
]
GRID = ["penalty=l1,orthogonal", "penalty.scale=1e-4,1e-3"]


def multirun(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_train("-m", *TINY, *args, f"hydra.sweep.dir={sweep_dir}", cwd=sweep_dir.parent)


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """A finished 2x2 grid (penalty x scale), shared by the tests that only read it."""
    sweep_dir = tmp_path_factory.mktemp("grid") / "sweep"
    return multirun(sweep_dir, *GRID), sweep_dir


def hparams_plugin_data(log_dir: Path) -> dict:
    """TensorBoard's own reading of the HParams summaries in one folder (not its subfolders)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    data = {}
    if metadata.EXPERIMENT_TAG in content:
        data["experiment"] = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    if metadata.SESSION_START_INFO_TAG in content:
        data["session"] = metadata.parse_session_start_info_plugin_data(
            content[metadata.SESSION_START_INFO_TAG]
        )
    return data


def hparam_value(value) -> object:
    kind = value.WhichOneof("kind")
    return getattr(value, kind)


def test_grid_runs_four_jobs_in_their_own_folders(grid):
    result, sweep_dir = grid
    assert result.returncode == 0, result.stderr
    expected = {
        ("penalty=l1", "penalty.scale=0.0001"),
        ("penalty=l1", "penalty.scale=0.001"),
        ("penalty=orthogonal", "penalty.scale=0.0001"),
        ("penalty=orthogonal", "penalty.scale=0.001"),
    }
    seen = set()
    for job in range(4):
        run_dir = sweep_dir / str(job)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        seen.add(tuple(o for o in overrides if o.startswith("penalty")))
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "completed"
        assert (run_dir / "model.keras").is_file()
        assert metrics["rss_mb"] > 0
        assert 0 <= metrics["diagnostics"]["near_zero"] <= 1
    assert seen == expected
    assert not (sweep_dir / "4").exists()


def test_grid_hparams_are_in_tensorboards_event_files(grid):
    _, sweep_dir = grid
    experiment = hparams_plugin_data(sweep_dir)["experiment"]
    infos = {h.name: h for h in experiment.hparam_infos}
    assert set(infos) == {"penalty.name", "penalty.scale", "status"}  # no duplicate `penalty`
    domain = [v.string_value for v in infos["penalty.name"].domain_discrete.values]
    assert domain == ["l1", "orthogonal"]
    assert [v.number_value for v in infos["penalty.scale"].domain_discrete.values] == [1e-4, 1e-3]
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {("validation", "epoch_loss"), ("validation", "data_loss"),
            ("validation", "epoch_accuracy"), ("train", "penalty/total")} <= metrics  # fmt: skip
    for job in range(4):
        run_dir = sweep_dir / str(job)
        session = hparams_plugin_data(run_dir)["session"]
        values = {k: hparam_value(v) for k, v in session.hparams.items()}
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert values["penalty.name"] == config["penalty"]["name"] and "penalty" not in values
        assert values["penalty.scale"] == pytest.approx(config["penalty"]["scale"])
        assert values["trainer.epochs"] == 2 and values["data"] == "synthetic"
        assert values["status"] == "completed"


def test_grid_summary_csv_has_one_row_per_job(grid):
    _, sweep_dir = grid
    rows = read_summary(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    for row in rows:
        metrics = read_metrics(sweep_dir / row["job"])
        assert row["status"] == "ok" and row["error"] == ""
        assert float(row["validation/data_loss"]) == pytest.approx(
            metrics["validation"]["data_loss"]
        )
        assert float(row["penalty/total"]) == pytest.approx(metrics["penalty"]["total"])
        assert f"penalty={row['penalty.name']}" in row["overrides"]
    assert {(r["penalty.name"], float(r["penalty.scale"])) for r in rows} == {
        ("l1", 1e-4), ("l1", 1e-3), ("orthogonal", 1e-4), ("orthogonal", 1e-3),
    }  # fmt: skip


def test_grid_prints_a_markdown_table_and_writes_plots(grid):
    import matplotlib.image

    result, sweep_dir = grid
    assert "| job | penalty.name | penalty.scale | status |" in result.stdout
    assert result.stdout.count("| ok |") == 4
    for name in ("validation_vs_scale.png", "diagnostics_vs_scale.png"):
        image = matplotlib.image.imread(sweep_dir / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
        assert image.std() > 0.01  # something is drawn


def test_report_command_rewrites_the_report(grid, tmp_path):
    _, finished = grid
    sweep_dir = tmp_path / "copy"
    shutil.copytree(finished, sweep_dir)
    for name in (
        "summary.csv",
        "validation_vs_scale.png",
        "diagnostics_vs_scale.png",
        "report.html",
    ):
        (sweep_dir / name).unlink()
    result = subprocess.run(
        [sys.executable, "-m", "regfw.report", str(sweep_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read_summary(sweep_dir) == read_summary(finished)
    assert (sweep_dir / "validation_vs_scale.png").is_file()
    assert (sweep_dir / "report.html").read_text().count('<tr class="ok">') == 4
    assert "| job |" in result.stdout

    (tmp_path / "empty").mkdir()
    empty = subprocess.run(
        [sys.executable, "-m", "regfw.report", str(tmp_path / "empty")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert empty.returncode == 2 and "regfw: error:" in empty.stderr


def _request(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_serves_the_runs_and_hparams(grid):
    _, sweep_dir = grid
    with tensorboard(sweep_dir) as url:
        base = url.rstrip("/")
        runs: list = []
        for _ in range(60):  # the server loads the event files: a few seconds
            runs = _request(f"{base}/data/runs")
            if {"0/validation", "3/validation"} <= set(runs):
                break
            time.sleep(1)
        assert {".", "0", "1", "2", "3", "0/validation"} <= set(runs), runs
        experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        assert {h["name"] for h in experiment["hparamInfos"]} == {
            "penalty.name",
            "penalty.scale",
            "status",
        }
        groups = _request(
            f"{base}/data/plugin/hparams/session_groups",
            {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
             "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                 "STATUS_RUNNING"]},
        )  # fmt: skip
        sessions = [s for g in groups["sessionGroups"] for s in g["sessions"]]
        assert sorted(s["name"] for s in sessions) == ["0", "1", "2", "3"]
        for session in sessions:
            metrics = read_metrics(sweep_dir / session["name"])
            served = {(m["name"]["group"], m["name"]["tag"]): m["value"]
                      for m in session["metricValues"]}  # fmt: skip
            assert served["validation", "data_loss"] == pytest.approx(
                metrics["validation"]["data_loss"]
            )
            assert served["validation", "epoch_accuracy"] == pytest.approx(
                metrics["validation"]["accuracy"]
            )


def test_joblib_launcher_runs_seed_replicates_in_parallel(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = multirun(
        sweep_dir, "trainer.seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    # In parallel: each job's time from its record (written once its checks passed, before
    # training) to its metrics.json (written at its end) overlaps the other's, as seen on disk.
    spans = [
        ((sweep_dir / job / ".hydra" / "config.yaml").stat().st_mtime,
         (sweep_dir / job / "metrics.json").stat().st_mtime)
        for job in ("0", "1")
    ]  # fmt: skip
    (start_0, end_0), (start_1, end_1) = spans
    assert start_0 < end_1 and start_1 < end_0, spans  # one after the other would not overlap
    rows = read_summary(sweep_dir)
    assert [(r["trainer.seed"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok")]
    with open(sweep_dir / "summary_by_seed.csv", newline="") as f:
        (group,) = csv.DictReader(f)
    losses = [float(r["validation/data_loss"]) for r in rows]
    assert group["n"] == "2"
    assert float(group["validation/data_loss/mean"]) == pytest.approx(np.mean(losses))
    assert float(group["validation/data_loss/std"]) == pytest.approx(np.std(losses, ddof=1))


def test_optuna_runs_three_trials_and_keeps_the_best(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = multirun(sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, result.stderr
    trials = [read_metrics(sweep_dir / str(i)) for i in range(3)]
    assert not (sweep_dir / "3").exists()
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    values = [t["objective"]["value"] for t in trials]
    assert best["best_value"] == pytest.approx(min(values))
    scales = [
        yaml.safe_load((sweep_dir / str(i) / ".hydra" / "config.yaml").read_text())["penalty"][
            "scale"
        ]
        for i in range(3)
    ]
    assert len(set(scales)) == 3 and all(1e-6 <= s <= 1e-1 for s in scales)
    experiment = hparams_plugin_data(sweep_dir)["experiment"]
    infos = {h.name: h for h in experiment.hparam_infos}
    assert infos["penalty.scale"].domain_interval.min_value == pytest.approx(1e-6)
    assert infos["optimizer.learning_rate"].domain_interval.max_value == pytest.approx(1e-1)


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = multirun(sweep_dir, "penalty.include=[nothing/*],[*/kernel]")
    assert result.returncode == 1, result.stderr
    failed, completed = read_metrics(sweep_dir / "0"), read_metrics(sweep_dir / "1")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("SelectionError:") and "matches no weight" in failed["error"]
    session = hparams_plugin_data(sweep_dir / "0")["session"]
    assert session.hparams["status"].string_value == "failed"
    assert session.group_name == "0 penalty.include=[nothing/*]"
    assert completed["status"] == "completed"
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert "matches no weight" in rows[0]["error"]
    output = result.stdout + result.stderr  # Hydra logs to stdout
    assert "1 of 2 jobs did not complete" in output
    assert "Traceback" not in output  # a user mistake: one line, no traceback


def test_fail_on_bad_jobs_false_exits_0_and_a_diverged_job_returns_nan(tmp_path):
    sweep_dir, returns = tmp_path / "sweep", tmp_path / "returns.jsonl"
    result = multirun(
        sweep_dir, "optimizer=sgd", "optimizer.learning_rate=1e30,0.01",  # job 0 diverges
        "hydra.callbacks.sweep.fail_on_bad_jobs=false",
        "+hydra.callbacks.returns._target_=tests.job_returns.RecordReturns",
        f"+hydra.callbacks.returns.path={returns}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr  # with fail_on_bad_jobs=true: 1
    diverged, completed = read_metrics(sweep_dir / "0"), read_metrics(sweep_dir / "1")
    assert diverged["status"] == "diverged" and "loss became non-finite" in diverged["error"]
    assert completed["status"] == "completed" and completed["epochs_run"] == 2  # it still ran
    # What each job returned to the sweeper (Hydra's own record of it): NaN for the diverged one.
    returned = {r["job"]: r for r in map(json.loads, returns.read_text().splitlines())}
    assert {r["status"] for r in returned.values()} == {"COMPLETED"}
    assert math.isnan(float(returned[0]["value"]))
    assert float(returned[1]["value"]) == completed["validation"]["data_loss"]
    assert [r["status"] for r in read_summary(sweep_dir)] == ["diverged", "ok"]
    assert "job 0 diverged" in result.stdout + result.stderr


def test_a_stop_wrapped_by_tensorflow_is_recorded_as_the_stop(tmp_path):
    # Slurm's signal can land inside a TensorFlow op (a tf.py_function), which wraps what the
    # handler raises in its own error; the job is still recorded as timed out, with the reason.
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    from regfw.config.compose import conf_dir
    from regfw.errors import JobStopped
    from regfw.sweeps.callback import run_recorded, stopped_by

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        config = compose("config", return_hydra_config=True)
    cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])

    def wrapped_stop() -> float:
        try:
            raise stopped_by(JobStopped("timeout", "Slurm's time limit was near; resume it"))
        except JobStopped as stop:
            raise RuntimeError(
                f"{{{{function_node}}}} JobStopped: {stop} [Op:EagerPyFunc]"
            ) from None

    def failing() -> float:
        raise RuntimeError("a real failure")

    saved = HydraConfig.instance().cfg
    try:
        for name, train, status, error in (
            ("0", wrapped_stop, "timeout", "JobStopped: Slurm's time limit was near; resume it"),
            ("1", failing, "failed", "RuntimeError: a real failure"),  # the stop is not kept
        ):
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.runtime.output_dir = str(tmp_path / name)
            HydraConfig.instance().set_config(config)
            assert math.isnan(run_recorded(cfg, train))
            metrics = read_metrics(tmp_path / name)
            assert (metrics["status"], metrics["error"]) == (status, error)
    finally:
        HydraConfig.instance().cfg = saved


@pytest.mark.parametrize(
    ("slurm_state", "own_status", "recorded"),
    [
        ("FAILED", "timeout", "timeout"),  # stopped itself at the signal, exited before the limit
        ("FAILED", "cancelled", "cancelled"),
        ("FAILED", None, "failed"),  # never recorded anything
        ("TIMEOUT", None, "timeout"),
        ("CANCELLED by 0", "failed", "cancelled"),
    ],
)
def test_an_unfinished_slurm_job_is_recorded_with_the_best_known_status(
    tmp_path, slurm_state, own_status, recorded
):
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict, read_write

    from regfw.config.compose import conf_dir
    from regfw.runs import atomic
    from regfw.sweeps.slurm import record_unfinished

    run_dir = tmp_path / "0"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        config = compose("config", overrides=["trainer.seed=1"], return_hydra_config=True)
    with read_write(config), open_dict(config):
        config.hydra.runtime.output_dir = str(run_dir)
        config.hydra.job.num = 0
    own = {"status": own_status, "error": f"the job's own reason ({own_status})"}
    if own_status:
        run_dir.mkdir()
        atomic.write_json(run_dir / "metrics.json", own)
    job = SimpleNamespace(state=slurm_state, job_id="42", paths=SimpleNamespace(stdout="42.out"))
    result = record_unfinished(job, config, RuntimeError("no result"))
    assert math.isnan(result.return_value)
    metrics = read_metrics(run_dir)
    assert metrics["status"] == recorded
    if recorded == own_status:
        assert metrics == own  # kept as the job wrote it
    else:
        state = slurm_state.split()[0]
        assert metrics["error"].startswith(f"Slurm job 42 ended {state} without a result (log: ")
