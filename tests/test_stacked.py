"""`hydra/launcher=stacked`: a grid trains as one `jax.vmap` program, each job as if alone.

The launcher runs on the JAX backend, so the sweeps run in subprocesses (this process runs
TensorFlow). Each end-to-end test compares a stacked sweep with the same sweep through Hydra's
basic launcher, job by job: every job's numbers must be those of the job run alone.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import regfw
from regfw.cli import find_problem
from regfw.sweeps import stacking
from tests.conftest import REPO, event_scalars, event_tags, read_metrics, run_train

JAX = ["trainer.backend=jax", "trainer.verbose=0", "trainer.histograms=false"]
DIGITS = [*JAX, "data=digits", "trainer.batch_size=64"]


# ------------------------------------------------------------------------------------------
# Which jobs stack (pure Python on configs: fast).
# ------------------------------------------------------------------------------------------


def _key(*overrides: str) -> str:
    return stacking.stack_key(regfw.compose([*JAX, *overrides]))


def test_jobs_that_differ_only_in_numbers_share_a_program():
    base = _key("penalty.scale=1e-4")
    for same in (["penalty.scale=1e-2"], ["trainer.seed=3"], ["optimizer.learning_rate=0.1"],
                 ["optimizer.beta_1=0.8"], ["trainer.monitor=val_loss"],
                 ["penalty.schedule.name=constant", "penalty.scale=3.0"]):  # fmt: skip
        assert _key("penalty.scale=1e-4", *same) == base, same
    # A weight decay stacks with another weight decay, not with none (Keras's default).
    decay = _key("optimizer=adamw", "optimizer.weight_decay=0.01")
    assert _key("optimizer=adamw", "optimizer.weight_decay=0.1") == decay
    assert _key("optimizer.weight_decay=0.01") != base
    # The model, the data, the batch size, the epochs, the optimizer class, the penalty: not.
    for other in (["model.units=[32]"], ["data=synthetic"], ["trainer.batch_size=8"],
                  ["trainer.epochs=3"], ["optimizer=sgd"], ["penalty=l1"],
                  ["trainer.precision=mixed_bfloat16"]):  # fmt: skip
        assert _key("penalty.scale=1e-4", *other) != base, other


def test_groups_keep_job_order_and_split_at_max_stack():
    configs = [regfw.compose([*JAX, f"penalty.scale={s}", f"trainer.batch_size={b}"])
               for b in (16, 32) for s in (1, 2, 3)]  # fmt: skip
    assert stacking.groups(configs, max_stack=64) == [[0, 1, 2], [3, 4, 5]]
    assert stacking.groups(configs, max_stack=2) == [[0, 1], [2], [3, 4], [5]]


def test_jobs_that_cannot_stack_say_why():
    why = stacking.why_alone
    assert why(regfw.compose(JAX)) is None
    assert why(regfw.compose([*JAX, "trainer.jit_compile=false"])) == (
        "trainer.jit_compile=false (a stack is one compiled program)"
    )
    assert why(regfw.compose([*JAX, "trainer.strategy=mirrored"])) == (
        "trainer.strategy=mirrored (one device per stack)"
    )
    assert why(regfw.compose(["trainer.backend=tensorflow"])) == (
        "the stacked launcher needs trainer.backend=jax"
    )


def test_the_stacked_launcher_on_tensorflow_is_a_one_line_error(tmp_path):
    assert find_problem(["-m", "hydra/launcher=stacked", "penalty.scale=1,2"]) == (
        "hydra/launcher=stacked: needs trainer.backend=jax (trainer.backend=tensorflow): a stack "
        "is one jax.vmap program; add trainer.backend=jax, or use the basic launcher"
    )
    done = run_train("-m", "hydra/launcher=stacked", "penalty.scale=1,2",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "regfw: error: hydra/launcher=stacked: needs trainer.backend=jax (trainer.backend="
        "tensorflow): a stack is one jax.vmap program; add trainer.backend=jax, or use the basic "
        "launcher"
    ]
    assert not (tmp_path / "sweep").exists()


def _hydra_job_composer():
    """Hydra's loader, its sweep-level config, and its composition of a job (calls counted)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", [*JAX, "hydra/launcher=stacked"], RunMode.MULTIRUN)
    calls = []

    def compose(master_config, overrides):
        calls.append(overrides)
        return loader.load_sweep_config(master_config, overrides)

    return loader, master, compose, calls


def test_a_grids_job_configs_are_hydras_with_one_composition_per_kind():
    from hydra import initialize_config_dir

    from regfw.config.compose import conf_dir
    from regfw.sweeps.job_configs import JobConfigs

    grid = [[f"penalty.scale={s}", f"trainer.seed={seed}", "optimizer.learning_rate=0.01"]
            for s in ("1e-4", "1e-2", "0.5", "3") for seed in (0, 1)]  # fmt: skip
    other_kinds = [
        ["penalty=l1", "penalty.scale=1e-3"], ["penalty=l1", "penalty.scale=2e-3"],  # a group
        ["model.units=[8]"], ["+callbacks.stop._target_=keras.callbacks.EarlyStopping"],
        ["hydra.job.chdir=false", "trainer.seed=1"], ["data.validation_split=0.3"],
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        loader, master, compose, calls = _hydra_job_composer()
        configs = JobConfigs(compose)
        for overrides in grid + other_kinds:
            ours = configs.load(master, overrides)
            theirs = loader.load_sweep_config(master, overrides)
            assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(theirs), overrides
            task = [o for o in overrides if not o.startswith("hydra.")]
            assert list(ours.hydra.overrides.task) == task
    # The grid: its first job composed, its second composed to check the copy; six copies.
    assert calls[:2] == grid[:2] and grid[2] not in calls
    # l1: composed, then checked; the others are kinds of their own.
    assert calls[2:] == other_kinds


def test_a_copy_that_differs_from_hydras_composition_falls_back_to_hydra(caplog):
    from hydra import initialize_config_dir

    from regfw.config.compose import conf_dir
    from regfw.sweeps.job_configs import JobConfigs

    grid = [[f"penalty.scale={s}"] for s in ("1e-4", "1e-3", "1e-2", "1e-1")]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        _, master, compose, calls = _hydra_job_composer()

        def composed_otherwise(master_config, overrides):
            config = compose(master_config, overrides)
            config.trainer.epochs = len(calls)  # what a copy cannot know
            return config

        configs = JobConfigs(composed_otherwise)
        epochs = [configs.load(master, overrides).trainer.epochs for overrides in grid]
    assert calls == grid  # every job composed once the check failed
    assert epochs == [1, 2, 3, 4]
    assert "differs from Hydra's composition for penalty.scale=1e-3" in caplog.text


def test_the_command_line_check_composes_one_config_per_kind_of_variant(monkeypatch):
    import regfw.cli

    calls = []
    compose = regfw.cli.compose

    def counted(overrides, **kwargs):
        calls.append(list(overrides))
        return compose(overrides, **kwargs)

    monkeypatch.setattr(regfw.cli, "compose", counted)
    scales = ",".join(f"{10 ** (-5 + i / 4):.3g}" for i in range(16))
    grid = ["-m", f"penalty.scale={scales}", "trainer.seed=0,1,2,3"]
    assert find_problem(grid, folders=False) is None
    # 19 variants (the first values, then each other value once): the first and second composed.
    assert calls == [["penalty.scale=1e-05", "trainer.seed=0"],
                     ["penalty.scale=1.78e-05", "trainer.seed=0"]]  # fmt: skip
    # A bad value in a copied variant gets the answer Hydra's own composition gets.
    for bad, expected in (
        ("trainer.seed=0,1,x", "trainer.seed='x': expected an integer >= 0 and <= 4294967295"),
        ("penalty.scale=1e-4,1e-3,-1", "penalty.scale=-1: expected a finite number >= 0"),
        ("penalty.scale=1e-4,1e-3,abc", "penalty.scale='abc': expected a finite number >= 0"),
        ("trainer.epochs=1,2,[3]", "trainer.epochs=[3]: expected an integer >= 1"),
    ):
        assert find_problem(["-m", "trainer.seed=0,1", bad], folders=False) == expected, bad


def test_checkpoints_written_in_the_background_keep_the_newest_state_and_their_errors(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import keras
    import numpy as np

    from regfw.training.checkpoints import Checkpoint, read_state
    from regfw.training.divergence import DivergenceGuard

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(optimizer="sgd", loss="mse")
    run, blocked = tmp_path / "run", tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "checkpoint").write_text("a file where the checkpoint folder goes\n")
    with ThreadPoolExecutor(1) as writer:
        checkpoint = Checkpoint(run, DivergenceGuard([]), 1, writer)
        checkpoint.set_model(model)
        for epoch in range(3):
            model.get_layer("dense").kernel.assign(np.full((3, 2), epoch, "float32"))
            checkpoint.on_epoch_end(epoch, {"loss": float(epoch)})
        checkpoint.on_train_end()
        assert not checkpoint.pending
        failing = Checkpoint(blocked, DivergenceGuard([]), 1, writer)
        failing.set_model(model)
        failing.on_epoch_end(0, {"loss": 0.0})
        with pytest.raises(OSError):
            failing.on_train_end()
        # While the writer is busy, a newer epoch's state supersedes the one still waiting.
        gate, late = threading.Event(), tmp_path / "late"
        busy = writer.submit(gate.wait, 60)
        superseding = Checkpoint(late, DivergenceGuard([]), 1, writer)
        superseding.set_model(model)
        for epoch in range(3, 6):
            model.get_layer("dense").kernel.assign(np.full((3, 2), epoch, "float32"))
            superseding.on_epoch_end(epoch, {"loss": float(epoch)})
        assert [f.cancelled() for f in superseding.pending] == [False]  # epochs 4, 5 dropped
        assert not (late / "checkpoint").exists()
        gate.set()
        superseding.on_train_end()
        assert busy.result() is True and not superseding.pending
    for folder, epochs in ((run, 3), (late, 6)):
        state = read_state(folder / "checkpoint")
        assert (state["epochs_completed"], state["logs"]) == (epochs, {"loss": epochs - 1.0})
        assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == [
            f"epoch-{epochs:05d}.npz", "state.json"]  # fmt: skip
        with np.load(folder / "checkpoint" / state["state_file"]) as archive:
            np.testing.assert_array_equal(
                archive["model/sequential/dense/kernel"], np.full((3, 2), epochs - 1.0)
            )


# ------------------------------------------------------------------------------------------
# End to end: stacked sweeps against the same sweeps through the basic launcher.
# ------------------------------------------------------------------------------------------


def _sweep(
    tmp_path: Path,
    name: str,
    *args: str,
    launcher: str = "stacked",
    code: int = 0,
    stacks: int | None = None,
) -> Path:
    """Runs a sweep; with `stacks`, asserts that many stacks trained (their cost lines)."""
    sweep = tmp_path / name
    extra = ["hydra/launcher=stacked"] if launcher == "stacked" else []
    done = run_train("-m", *extra, *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900)
    assert done.returncode == code, done.stderr[-3000:]
    # Each stack's programs were compiled once, on the compiler thread, and its jits used them.
    lines = re.findall(r"stacked: \d+ jobs in .*", done.stdout)
    assert all(" 3 programs compiled beside the setup in " in line for line in lines), lines
    assert "compiled again" not in done.stdout + done.stderr
    assert stacks is None or len(lines) == stacks, lines
    return sweep


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _assert_same_numbers(stacked: Path, alone: Path, first_epoch: float, final: float) -> float:
    """Asserts job by job; returns the largest final relative difference."""
    worst = 0.0
    for a, b in zip(_jobs(stacked), _jobs(alone), strict=True):
        ours, theirs = read_metrics(a), read_metrics(b)
        assert ours["status"] == theirs["status"] == "completed"
        for section in ("train", "validation", "penalty", "penalty_scale"):
            assert set(ours[section]) == set(theirs[section]), section
            for key, value in theirs[section].items():
                assert ours[section][key] == pytest.approx(value, rel=final), (a, section, key)
                worst = max(worst, _relative(ours[section][key], value))
        # The first epoch, from the TensorBoard events: tighter. Every scalar (the metrics, the
        # learning rate, penalty values and scales, weight diagnostics) and every histogram.
        for sub in ("validation", "train"):
            ours_e, theirs_e = event_scalars(a / sub), event_scalars(b / sub)
            assert set(ours_e) == set(theirs_e)
            assert any(tag.startswith("diagnostics/") for tag in theirs_e) or sub == "validation"
            for tag, points in theirs_e.items():
                assert [step for step, _ in ours_e[tag]] == [step for step, _ in points], tag
                assert ours_e[tag][0][1] == pytest.approx(points[0][1], rel=first_epoch), tag
        ours_h, theirs_h = _histograms(a / "train"), _histograms(b / "train")
        assert set(ours_h) == set(theirs_h)
        for tag, buckets in theirs_h.items():
            edges, counts = buckets[:, :2], buckets[:, 2]
            np.testing.assert_allclose(ours_h[tag][:, :2], edges, rtol=first_epoch, atol=1e-7)
            # A weight a hair's breadth from an edge may fall in the bucket next door.
            assert ours_h[tag][:, 2].sum() == counts.sum(), tag
            assert np.abs(ours_h[tag][:, 2] - counts).sum() <= 2, tag
    return worst


def _histograms(log_dir: Path) -> dict[str, np.ndarray]:
    """The first epoch's histogram buckets in a TensorBoard folder: tag -> (30, 3) array."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    found = {}
    for tag in acc.Tags()["tensors"]:
        first = tensor_util.make_ndarray(acc.Tensors(tag)[0].tensor_proto)
        if first.ndim == 2:
            found[tag] = first
    return found


def _assert_standalone_folder(job: Path, alone: Path) -> None:
    """A stacked job's folder has what a run alone writes, with its own overrides."""
    assert OmegaConf.load(job / ".hydra/overrides.yaml") == OmegaConf.load(
        alone / ".hydra/overrides.yaml"
    )

    def names(run: Path) -> list[str]:
        return sorted("events" if p.name.startswith("events.out") else p.name
                      for p in run.iterdir())  # fmt: skip

    assert names(job) == names(alone)
    others = {"0": "1-3", "1": "0, 2-3", "2": "0-1, 3", "3": "0-2"}[job.name]  # 4 jobs
    log = (job / "train.log").read_text()
    assert f"trains as one program with jobs {others} (hydra/launcher=stacked)" in log
    for sub in ("", "train", "validation"):
        assert sorted(event_tags(job / sub)) == sorted(event_tags(alone / sub)), sub
    assert not (job / "checkpoint").exists()


@pytest.mark.slow
def test_stacked_mlp_with_dropout_and_a_schedule_matches_each_job_alone(tmp_path):
    with_histograms = [a for a in DIGITS if a != "trainer.histograms=false"]
    grid = [*with_histograms, "model.dropout=0.2", "trainer.epochs=5", "penalty.schedule.name=warmup",
            "penalty.schedule.epochs=3", "penalty.scale=1e-4,1e-2", "trainer.seed=0,1"]  # fmt: skip
    stacked = _sweep(tmp_path, "stacked", *grid, stacks=1)
    alone = _sweep(tmp_path, "alone", *grid, launcher="basic")
    worst = _assert_same_numbers(stacked, alone, first_epoch=1e-5, final=1e-3)
    print(f"mlp: worst final relative difference {worst:.2e}", file=sys.stderr)
    for job, twin in zip(_jobs(stacked), _jobs(alone), strict=True):
        _assert_standalone_folder(job, twin)
    rows = list(csv.DictReader((stacked / "summary.csv").open()))
    assert len(rows) == 4
    # The jobs really differ (dropout, seeds and scales are per job, not shared).
    losses = {read_metrics(j)["validation"]["data_loss"] for j in _jobs(stacked)}
    assert len(losses) == 4


@pytest.mark.slow
def test_stacked_cnn_with_a_schedule_matches_each_job_alone(tmp_path):
    grid = [*DIGITS, "model=cnn", "model.filters=[8]", "model.dense_units=16",
            "trainer.epochs=5", "penalty.schedule.name=step", "penalty.schedule.every=2",
            "penalty.schedule.factor=0.5", "penalty.scale=1e-4,1e-2",
            "optimizer.learning_rate=1e-3,3e-3"]  # fmt: skip
    stacked = _sweep(tmp_path, "stacked", *grid, stacks=1)
    alone = _sweep(tmp_path, "alone", *grid, launcher="basic")
    worst = _assert_same_numbers(stacked, alone, first_epoch=1e-5, final=1e-3)
    print(f"cnn: worst final relative difference {worst:.2e}", file=sys.stderr)
    model = regfw.load_model(_jobs(stacked)[3])  # written by JAX, loaded here by TensorFlow
    assert [v.path for v in model.weights][:2] == ["conv2d/kernel", "conv2d/bias"]


@pytest.mark.slow
def test_a_diverging_job_stops_and_leaves_its_neighbours_untouched(tmp_path):
    common = [*JAX, "data=synthetic", "data.n_samples=200", "trainer.epochs=3"]
    with_it = _sweep(tmp_path, "with", *common, "penalty.scale=1e-4,1e38,1e-2", code=1)
    without = _sweep(tmp_path, "without", *common, "penalty.scale=1e-4,1e-2")
    diverged = read_metrics(with_it / "1")
    assert diverged["status"] == "diverged"
    assert diverged["epochs_run"] == 1
    assert diverged["error"].startswith("loss became non-finite at epoch 1, batch 1: ")
    assert diverged["error"].endswith("penalty term 'orthogonal' on dense/kernel")
    assert not (with_it / "1" / "model.keras").exists()
    for a, b in ((with_it / "0", without / "0"), (with_it / "2", without / "1")):
        ours, theirs = read_metrics(a), read_metrics(b)
        for section in ("train", "validation", "penalty"):
            assert ours[section] == theirs[section], (a, section)  # exactly


@pytest.mark.slow
def test_a_killed_stacked_sweep_resumes_only_its_unfinished_jobs(tmp_path):
    # Two stacks (batch sizes 16 and 32) of two jobs; killed once job 2 (the second stack's
    # first) has a checkpoint. Checkpoints are written in the background and one superseded
    # before its write started is dropped, so that is after epoch 1 or 2 (both resume exactly).
    grid = [*JAX, "data=synthetic", "data.n_samples=200", "trainer.epochs=3",
            "trainer.checkpoint_every=1", "trainer.batch_size=16,32", "penalty.scale=1e-4,1e-2"]  # fmt: skip
    sweep = tmp_path / "sweep"
    import subprocess

    killed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "faults.py"), "after:/2/checkpoint/state.json",
         str(REPO / "train.py"), "-m", "hydra/launcher=stacked", *grid,
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    done_first = {j.name: (j / "metrics.json").stat().st_mtime_ns
                  for j in _jobs(sweep) if (j / "metrics.json").exists()}  # fmt: skip
    assert sorted(done_first) == ["0", "1"]
    states = {j.name: json.loads((j / "checkpoint/state.json").read_text())["epochs_completed"]
              for j in _jobs(sweep) if (j / "checkpoint/state.json").exists()}  # fmt: skip
    assert states["2"] in (1, 2) and set(states) <= {"2", "3"}, states
    assert all(0 < epochs < 3 for epochs in states.values()), states

    resumed = _sweep(tmp_path, "sweep", *grid, "trainer.resume=true")
    for name, mtime in done_first.items():
        assert (resumed / name / "metrics.json").stat().st_mtime_ns == mtime  # not rerun
    straight = _sweep(tmp_path, "straight", *grid)
    for a, b in zip(_jobs(resumed), _jobs(straight), strict=True):
        ours, theirs = read_metrics(a), read_metrics(b)
        assert ours["status"] == "completed" and ours["epochs_run"] == 3
        for section in ("train", "validation", "penalty"):
            for key, value in theirs[section].items():
                assert ours[section][key] == pytest.approx(value, rel=1e-6), (a, key)
        assert math.isfinite(ours["objective"]["value"])


@pytest.mark.slow
def test_a_group_too_big_for_memory_trains_as_smaller_stacks_with_the_same_numbers(tmp_path):
    from regfw.training import stacked

    common = [*JAX, "data=synthetic", "data.n_samples=200", "trainer.epochs=2",
              "penalty.scale=1e-4,1e-2", "trainer.seed=0,1"]  # fmt: skip
    need = stacked.job_bytes(regfw.compose([*JAX, "data=synthetic", "data.n_samples=200"]))
    budget = f"hydra.launcher.memory_mb={2.5 * need / 2**20}"  # two jobs fit, not three
    sweep = tmp_path / "split"
    done = run_train("-m", "hydra/launcher=stacked", *common, budget, f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jobs 0-3 train as stacks of 2: each needs about" in done.stdout
    whole = _sweep(tmp_path, "whole", *common)
    for a, b in zip(_jobs(sweep), _jobs(whole), strict=True):
        ours, theirs = read_metrics(a), read_metrics(b)
        for section in ("train", "validation", "penalty"):
            assert ours[section] == theirs[section], (a, section)  # exactly
