"""Two Optuna sweeper processes share one study through a database storage (SQLite, one machine).

The commands are the README's: the study is created first with `optuna create-study` (two
sweepers creating a new storage at once race on its tables), and each sweeper gets its own
sampler seed and sweep folder.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, read_metrics

pytestmark = [
    pytest.mark.slow,
    # optuna 2's storage code, which needs SQLAlchemy 1.4 (pyproject), warns about SQLAlchemy 2.
    pytest.mark.filterwarnings("ignore:Deprecated API features detected"),
]

TRIALS = 3  # per sweeper
# On JAX: the sweepers do not import TensorFlow, and their trials share the session's compilation
# cache (the storage, not the backend, is what this module tests).
TINY = [
    "trainer.backend=jax",
    "data=synthetic",
    "data.n_samples=200",
    "trainer.epochs=2",
    "trainer.verbose=0",
    "trainer.histograms=false",
]


def sweeper(sweep_dir: Path, storage: str, seed: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "-m", "hparams_search=optuna", *TINY,
         f"hydra.sweeper.storage={storage}", f"hydra.sweeper.n_trials={TRIALS}",
         f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=sweep_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def job_values(job_dir: Path) -> tuple[float, float]:
    """A job's (penalty.scale, optimizer.learning_rate), from its recorded config."""
    cfg = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    return cfg["penalty"]["scale"], cfg["optimizer"]["learning_rate"]


def test_two_sweepers_share_one_study_without_duplicates(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    created = subprocess.run(
        [str(Path(sys.executable).with_name("optuna")), "create-study", "--study-name", "regfw",
         "--storage", storage, "--direction", "minimize", "--skip-if-exists"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    sweep_dirs = [tmp_path / "worker1", tmp_path / "worker2"]
    processes = [sweeper(d, storage, seed) for seed, d in enumerate(sweep_dirs, start=1)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "Using an existing study with name 'regfw'" in output

    study = optuna.load_study(study_name="regfw", storage=storage)
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    params = [(t.params["penalty.scale"], t.params["optimizer.learning_rate"]) for t in trials]
    assert len(set(params)) == len(params)  # different seeds: no point evaluated twice

    jobs = {job_values(d / str(job)): (d, job) for d in sweep_dirs for job in range(TRIALS)}
    assert set(jobs) == set(params)  # every trial is exactly one job folder, and vice versa
    owner = {}
    for trial, values in zip(trials, params, strict=True):
        sweep_dir, job = jobs[values]
        owner[trial.number] = sweep_dir
        metrics = read_metrics(sweep_dir / str(job))
        assert metrics["status"] == "completed"
        assert metrics["objective"]["value"] == pytest.approx(trial.value)
    for sweep_dir in sweep_dirs:
        with open(sweep_dir / "summary.csv", newline="") as f:
            assert [r["status"] for r in csv.DictReader(f)] == ["ok"] * TRIALS

    # Each sweeper reports the study's best trial when it ends: the one that told the study its
    # last result reports the best of all trials.
    last = max(trials, key=lambda t: t.datetime_complete)
    for sweep_dir in sweep_dirs:
        best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
        own = [t.value for t in trials if owner[t.number] == sweep_dir]
        assert best["best_value"] <= min(own)
        assert any(math.isclose(best["best_value"], t.value) for t in trials)
        if sweep_dir == owner[last.number]:
            assert best["best_value"] == pytest.approx(study.best_value)
            assert best["best_params"] == pytest.approx(study.best_params)
