"""Sweeps through a real Slurm controller: `python train.py -m hydra/launcher=submitit_slurm ...`.

Needs the single-node cluster of `scripts/local-slurm start` (CI starts it); skipped where Slurm's
client commands are not installed. Three sweeps, run once for the module (`Sweeps`):

- `grid`: a 2x2 grid that completes, with submitit's job folders and Slurm's accounting.
- `faults`: job 0 is cancelled with `scancel` after its first checkpoint, job 1 reads a file that
  is not a `.npz`, job 2 completes; then the same sweep again with `trainer.resume=true`.
- `limit` (`hydra.launcher.timeout_min=1`): one job that trains past its time limit (its penalty,
  0, waits in every step, so training takes over a minute on any machine); then again with
  `trainer.resume=true`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, read_metrics

pytestmark = [
    pytest.mark.xdist_group("test_slurm"),  # one cluster, one worker: its sweeps run once
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("sinfo") is None,
        reason="Slurm's client commands are not installed (scripts/local-slurm start installs "
        "and starts a local cluster)",
    ),
]

QUIET = ["trainer.verbose=0", "trainer.histograms=false", "trainer.checkpoint_every=1"]
GRID = ["data=synthetic", "trainer.epochs=2", "penalty=l1,orthogonal", "penalty.scale=1e-4,1e-3"]
FAULT_EPOCHS = 30
FAULTS = ["data=file", f"trainer.epochs={FAULT_EPOCHS}"]
# Slurm's time limit is 1 minute; with signal_delay_s=1 slurmctld, which checks limits every 30 s,
# signals the job 29 to 59 s after it starts. The job must have saved a checkpoint by then and
# still be training: 40 epochs of 13 steps that wait 0.15 s each take 78 s on any machine.
LIMIT_EPOCHS = 40
LIMIT = [
    "data=synthetic",
    "data.n_samples=500",
    f"trainer.epochs={LIMIT_EPOCHS}",
    "penalty=custom",
    "penalty.name=wait",
    "penalty.include=[output/kernel]",
    "hydra.launcher.timeout_min=1",
    "hydra.launcher.signal_delay_s=1",
]
WAIT = '''"""A zero penalty that waits in every training step: training of a known wall-clock time."""

import time

import tensorflow as tf

from regfw import penalties

SECONDS = {seconds}


@penalties.register("wait")
def wait(w):
    """0, after sleeping SECONDS (each time the loss is computed)."""
    pause = tf.py_function(lambda: time.sleep(SECONDS) or 0.0, [], tf.float32)
    return 0.0 * tf.reduce_sum(w) + pause
'''


def slurm_sweep(sweep_dir: Path, *args: str) -> subprocess.Popen:
    """Starts `python train.py -m hydra/launcher=submitit_slurm <args>` in the background.

    The jobs import this checkout (PYTHONPATH: sbatch passes the environment on). The output goes
    to a new `<sweep>-<n>.log` beside the sweep folder (`finish` reads it).
    """
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    runs = len(list(sweep_dir.parent.glob(f"{sweep_dir.name}-*.log")))
    log = sweep_dir.parent / f"{sweep_dir.name}-{runs}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_slurm",
             *QUIET, *args, f"hydra.sweep.dir={sweep_dir}"],
            cwd=sweep_dir.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    process.log = log
    return process


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """Waits for a sweep started by `slurm_sweep`; returns its output."""
    process.wait(timeout=timeout)
    return process.log.read_text()


def wait_for(condition, what: str, timeout: float, process: subprocess.Popen | None = None):
    """Polls `condition` every 0.2 s until it returns something true; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert process is None or process.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.2)
    pytest.fail(f"no {what} after {timeout:.0f} s")


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_id(run_dir: Path) -> str:
    """The Slurm job id of a job folder, as the job recorded it (`hydra.job.id`)."""
    return yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]


def sacct_state(slurm_id: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", slurm_id, "-o", "JobID,State"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    states = dict(line.split("|", 1) for line in out.splitlines() if line)
    return states.get(slurm_id, "")


def epochs_in_checkpoint(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text())["epochs_completed"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """The local cluster answers and its node takes jobs."""
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    states = result.stdout.split()
    assert result.returncode == 0 and states, (
        f"no Slurm controller answers ({result.stderr.strip()}); run scripts/local-slurm start"
    )
    assert set(states) <= {"idle", "mixed", "allocated"}, f"the node is {states}"


class Sweeps:
    """The three sweeps of the module docstring, run in two rounds of sweeps side by side.

    Round 1: `faults` and `limit`; job 0 of `faults` is cancelled after its first epoch, then
    `grid` starts (its jobs run on the CPU that `limit`'s waiting job leaves free). The folders of
    `faults` and `limit` are then copied to `first/` for the tests of round 1. Round 2: `faults`
    and `limit` again with `trainer.resume=true`.
    """

    def __init__(self, root: Path) -> None:
        from sklearn.datasets import make_classification

        data = root / "data"
        data.mkdir()
        # Job 0 trains 30 epochs of 150 steps: still running when the SIGKILL that follows
        # scancel comes, 4-6 s after its SIGTERM (which submitit ignores).
        for name, samples in (("cancel.npz", 6000), ("small.npz", 500)):
            x, y = make_classification(n_samples=samples, n_features=10, random_state=0)
            np.savez(data / name, x=x.astype("float32"), y=y)
        (data / "bad.npz").write_text("not a zip archive\n")
        self.plugin = root / "wait.py"
        paths = ",".join(str(data / f) for f in ("cancel.npz", "bad.npz", "small.npz"))
        self.faults_args = [*FAULTS, f"data.path={paths}"]
        self.limit_args = [*LIMIT, f"plugins=[{self.plugin}]"]
        self.faults, self.limit, self.grid = root / "faults", root / "limit", root / "grid"
        self.first = root / "first"
        self.output: dict[str, str] = {}
        self.code: dict[str, int] = {}
        self.started: list[subprocess.Popen] = []

    def run(self) -> None:
        """Runs round 1, keeps a copy of its folders in `first/`, then runs round 2."""
        self.plugin.write_text(WAIT.format(seconds=0.15))
        faults = self._start(self.faults, *self.faults_args)
        limit = self._start(self.limit, *self.limit_args)
        cancelled = self.faults / "0"
        wait_for(lambda: epochs_in_checkpoint(cancelled) >= 1, "checkpoint of job 0", 240, faults)
        self.cancelled_id = job_id(cancelled)
        subprocess.run(["scancel", self.cancelled_id], check=True)
        grid = self._start(self.grid, *GRID)
        self._finish(faults=faults, limit=limit, grid=grid)
        for sweep_dir in (self.faults, self.limit):
            shutil.copytree(sweep_dir, self.first / sweep_dir.name)
        # Round 2. The penalty no longer waits: it is 0 either way, the same experiment.
        self.plugin.write_text(WAIT.format(seconds=0.0))
        resume = ["trainer.resume=true"]
        self._finish(
            resumed_faults=self._start(self.faults, *self.faults_args, *resume),
            resumed_limit=self._start(
                self.limit, *self.limit_args, *resume, "hydra.launcher.timeout_min=10"
            ),
        )

    def _start(self, sweep_dir: Path, *args: str) -> subprocess.Popen:
        self.started.append(slurm_sweep(sweep_dir, *args))
        return self.started[-1]

    def stop(self) -> None:
        """Ends the sweeps still running (after a failure); their Slurm jobs end on their own."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()

    def _finish(self, **processes: subprocess.Popen) -> None:
        for name, process in processes.items():
            self.output[name] = finish(process)
            self.code[name] = process.returncode


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Iterator[Sweeps]:
    sweeps = Sweeps(tmp_path_factory.mktemp("slurm"))
    try:
        sweeps.run()
        yield sweeps
    finally:
        sweeps.stop()


def test_grid_runs_four_slurm_jobs_to_completion(sweeps):
    assert sweeps.code["grid"] == 0, sweeps.output["grid"]
    seen = set()
    for job in range(4):
        run_dir = sweeps.grid / str(job)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        seen.add(tuple(o for o in overrides if o.startswith("penalty")))
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "completed" and metrics["epochs_run"] == 2
        assert (run_dir / "model.keras").is_file()
        assert not (run_dir / "checkpoint").exists()
    assert seen == {
        ("penalty=l1", "penalty.scale=0.0001"), ("penalty=l1", "penalty.scale=0.001"),
        ("penalty=orthogonal", "penalty.scale=0.0001"), ("penalty=orthogonal", "penalty.scale=0.001"),
    }  # fmt: skip
    assert not (sweeps.grid / "4").exists()


def test_grid_summary_and_report_are_written_by_the_submitting_process(sweeps):
    rows = read_summary(sweeps.grid)
    assert [(r["job"], r["status"], r["error"]) for r in rows] == [
        (str(job), "ok", "") for job in range(4)
    ]
    for row in rows:
        metrics = read_metrics(sweeps.grid / row["job"])
        assert float(row["validation/data_loss"]) == pytest.approx(
            metrics["validation"]["data_loss"]
        )
    output = sweeps.output["grid"]
    assert "| job | penalty.name | penalty.scale | status |" in output  # penalty= is penalty.name
    assert output.count("| ok |") == 4
    assert "Submitit 'slurm' sweep output dir" in output
    assert (sweeps.grid / "validation_vs_scale.png").stat().st_size > 10_000


def test_grid_jobs_ran_as_one_slurm_array_with_submitit_folders(sweeps):
    ids = [job_id(sweeps.grid / str(job)) for job in range(4)]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{task}" for task in range(4)]
    folders = sorted(p.name for p in (sweeps.grid / ".submitit").glob("*_*") if p.is_dir())
    assert folders == ids
    for slurm_id in ids:
        folder = sweeps.grid / ".submitit" / slurm_id
        assert (folder / f"{slurm_id}_submitted.pkl").is_file()
        assert (folder / f"{slurm_id}_0_result.pkl").is_file()
        log = (folder / f"{slurm_id}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={slurm_id}" in log and "Job completed successfully" in log
        assert sacct_state(slurm_id) == "COMPLETED"
    script = (sweeps.grid / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-3" in script and "#SBATCH --time=60" in script


def test_a_failing_job_is_recorded_and_the_others_finish(sweeps):
    sweep_dir, output = sweeps.first / "faults", sweeps.output["faults"]
    assert sweeps.code["faults"] == 1, output
    failed = read_metrics(sweep_dir / "1")
    assert failed["status"] == "failed"
    assert (
        failed["error"].startswith("ConfigError: data.path=") and "is not a .npz" in failed["error"]
    )
    completed = read_metrics(sweep_dir / "2")
    assert completed["status"] == "completed" and completed["epochs_run"] == FAULT_EPOCHS
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["cancelled", "failed", "ok"]
    assert "is not a .npz" in rows[1]["error"]
    assert "2 of 3 jobs did not complete" in output


def test_a_cancelled_job_is_recorded_with_its_slurm_state(sweeps):
    run_dir, slurm_id = sweeps.first / "faults" / "0", sweeps.cancelled_id
    assert sacct_state(slurm_id).startswith("CANCELLED")
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "cancelled"
    assert metrics["error"].startswith(f"Slurm job {slurm_id} ended CANCELLED without a result")
    assert "trainer.resume=true" in metrics["error"]
    assert metrics["objective"] == {"name": "val_data_loss", "value": None}
    assert 1 <= epochs_in_checkpoint(run_dir) < FAULT_EPOCHS
    assert f"job 0 cancelled: Slurm job {slurm_id} ended CANCELLED" in sweeps.output["faults"]
    row = read_summary(sweeps.first / "faults")[0]
    assert row["status"] == "cancelled" and row["data.path"].endswith("cancel.npz")


def test_a_job_at_its_time_limit_is_recorded_as_timeout(sweeps):
    sweep_dir, output = sweeps.first / "limit", sweeps.output["limit"]
    assert sweeps.code["limit"] == 1, output
    metrics = read_metrics(sweep_dir / "0")
    assert metrics["status"] == "timeout"
    assert metrics["error"].startswith(
        "JobStopped: Slurm's time limit (hydra.launcher.timeout_min=1) was near"
    )
    assert "max_num_timeout=0" in metrics["error"] and "trainer.resume=true" in metrics["error"]
    assert 1 <= epochs_in_checkpoint(sweep_dir / "0") < LIMIT_EPOCHS
    slurm_id = job_id(sweep_dir / "0")
    folder = sweep_dir / ".submitit" / slurm_id
    log = (folder / f"{slurm_id}_0_log.out").read_text()
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log
    assert "timed-out too many times" in log
    assert (folder / f"{slurm_id}_0_result.pkl").is_file()  # the job ended itself, recorded
    assert sacct_state(slurm_id) in ("COMPLETED", "TIMEOUT")  # TIMEOUT if it ended past 60 s
    assert [r["status"] for r in read_summary(sweep_dir)] == ["timeout"]
    assert "1 of 1 jobs did not complete" in output


def test_resume_finishes_the_cancelled_and_timed_out_jobs_from_their_checkpoints(sweeps):
    assert sweeps.code["resumed_limit"] == 0, sweeps.output["resumed_limit"]
    output = sweeps.output["resumed_faults"]
    assert sweeps.code["resumed_faults"] == 1, output  # job 1 reads the same bad file again
    for sweep, epochs in (("faults", FAULT_EPOCHS), ("limit", LIMIT_EPOCHS)):
        run_dir = getattr(sweeps, sweep) / "0"
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "completed" and metrics["epochs_run"] == epochs
        assert (run_dir / "model.keras").is_file()
        assert not (run_dir / "checkpoint" / "state.json").exists()
        log = (run_dir / "train.log").read_text()
        done = epochs_in_checkpoint(sweeps.first / sweep / "0")
        assert re.findall(r"resuming from \S+ after epoch (\d+)", log) == [str(done)]
    assert "already completed; nothing to do" in (sweeps.faults / "2" / "train.log").read_text()
    assert read_metrics(sweeps.faults / "1")["status"] == "failed"
    assert [r["status"] for r in read_summary(sweeps.faults)] == ["ok", "failed", "ok"]
    assert [r["status"] for r in read_summary(sweeps.limit)] == ["ok"]
    assert "1 of 3 jobs did not complete" in output


def test_a_stacked_sweep_runs_as_one_slurm_batch_job(tmp_path):
    """README: a stacked sweep (one JAX program for the grid) as one `sbatch --wait` job."""
    import shlex

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    sweep = tmp_path / "stacked"
    command = shlex.join([sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=stacked",
                          "trainer.backend=jax", *QUIET, "data=synthetic", "trainer.epochs=2",
                          "penalty.scale=1e-4,1e-3", "trainer.seed=0,1",
                          f"hydra.sweep.dir={sweep}"])  # fmt: skip
    done = subprocess.run(
        ["sbatch", "--wait", "--parsable", "--cpus-per-task=2", f"--output={tmp_path}/batch.out",
         "--wrap", command],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = (tmp_path / "batch.out").read_text()
    assert done.returncode == 0, done.stderr + output[-3000:]
    assert "jobs 0-3 train as one program" in output
    rows = read_summary(sweep)
    assert [row["status"] for row in rows] == ["ok"] * 4
    for job in range(4):
        assert read_metrics(sweep / str(job))["epochs_run"] == 2
