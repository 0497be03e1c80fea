"""Divergence, resume after SIGKILL, sweep resume, atomic writes and corrupted checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from regfw.runs import atomic
from tests.conftest import read_metrics, run_train, run_with_fault

SMALL = ["data=synthetic", "data.n_samples=300", "trainer.epochs=3", "trainer.histograms=false"]
BOOM = '''
import keras
from regfw import penalties


@penalties.register("boom")
def boom(w, at=0.6):
    """sum(w^2) while every |w| < at, then log(0) = -inf: a deliberately exploding penalty."""
    finite = keras.ops.max(keras.ops.abs(w)) < at
    return keras.ops.where(finite, keras.ops.sum(w * w), keras.ops.log(keras.ops.zeros(())))
'''


def test_divergence_is_attributed_and_stops_at_the_first_bad_batch(tmp_path, backend):
    (tmp_path / "boom.py").write_text(BOOM)
    run_dir = tmp_path / "run"
    # The backends start from other initial weights (Keras's initializers draw per backend):
    # a learning rate each that crosses |w| = 0.8 after a few good epochs.
    rate = {"tensorflow": 0.05, "jax": 0.07}[backend]
    result = run_train(
        "plugins=[boom.py]", "penalty=custom", "penalty.name=boom", "+penalty.at=0.8", "penalty.min_ndim=2",
        "penalty.include=[output/kernel]", f"optimizer.learning_rate={rate}", "trainer.epochs=10",
        "trainer.histograms=false", f"trainer.backend={backend}", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("regfw: error:")]
    assert "training diverged: loss became non-finite at epoch" in line
    assert "the data loss was finite; penalty term 'boom' on output/kernel" in line
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "diverged" and metrics["error"] in line
    assert metrics["penalty"]["boom"] is None  # non-finite values are written as null
    assert metrics["epochs_run"] > 1  # so there is a good epoch to keep
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["epochs_completed"] == metrics["epochs_run"] - 1  # the last good epoch
    assert not (run_dir / "model.keras").exists()


def test_data_loss_divergence_is_attributed_to_the_data_loss(tmp_path, fresh_keras):
    import regfw

    cfg = regfw.compose(
        [*SMALL, "optimizer=sgd", "optimizer.learning_rate=1e30", "trainer.verbose=0"]
    )
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert metrics["status"] == "diverged"
    assert "the data loss went non-finite" in metrics["error"]


# 800 samples: 40 full batches of 16 per epoch. (A kill at an exact write, tests/faults.py,
# needs no long epochs to land in; 6000 samples were for the polling kill it replaced.)
RESUME = [
    "data=synthetic", "data.n_samples=800", "trainer.batch_size=16", "trainer.epochs=5",
    "trainer.deterministic=true", "trainer.histograms=false", "trainer.verbose=0",
    "model.units=[32]", "trainer.resume=true",
]  # fmt: skip


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, backend):
    args = [*RESUME, f"trainer.backend={backend}"]
    whole = run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert "no checkpoint in" in whole.stdout + whole.stderr  # resume=true on a new folder says so

    killed = tmp_path / "killed"
    # SIGKILL right after the second checkpoint (tests/faults.py): a kill at an exact point.
    result = run_with_fault("after:checkpoint/state.json:2", *args, f"hydra.run.dir={killed}",
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == -9 and not (killed / "metrics.json").exists()
    done = json.loads((killed / "checkpoint" / "state.json").read_text())["epochs_completed"]
    assert done == 2
    resumed = run_train(*args, f"hydra.run.dir={killed}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {done}" in resumed.stdout + resumed.stderr
    a, b = read_metrics(tmp_path / "whole"), read_metrics(killed)
    assert b["epochs_run"] == a["epochs_run"] == 5
    for section in ("train", "validation", "penalty"):
        assert b[section] == a[section], section
    assert not (killed / "checkpoint").exists()  # removed once the run completed

    again = run_train(*args, f"hydra.run.dir={killed}", cwd=tmp_path)
    assert again.returncode == 0 and "already completed" in again.stdout + again.stderr
    assert read_metrics(killed) == b


def test_corrupted_checkpoint_is_reported_kept_aside_and_the_run_starts_fresh(tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMALL, "trainer.resume=true", f"hydra.run.dir={run_dir}"]
    killed = run_with_fault("after:checkpoint/state.json:1", *args, cwd=tmp_path)
    assert killed.returncode == -9
    (run_dir / "checkpoint" / "epoch-00001.npz").write_bytes(b"not a state file")
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "is unreadable" in output and "starting fresh" in output and "Traceback" not in output
    (aside,) = run_dir.glob("checkpoint.corrupt-*")
    assert (aside / "epoch-00001.npz").read_bytes() == b"not a state file"
    assert read_metrics(run_dir)["epochs_run"] == 3


def test_sweep_resume_skips_completed_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *SMALL,
        "trainer.verbose=0",
        "penalty.scale=1e-4,1e-3",
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_train(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    kept = (sweep / "0" / "model.keras").stat().st_mtime_ns
    (sweep / "1" / "metrics.json").unlink()  # job 1 "did not finish"
    second = run_train(*args, "trainer.resume=true", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (sweep / "0" / "model.keras").stat().st_mtime_ns == kept
    assert "already completed" in second.stdout + second.stderr
    assert read_metrics(sweep / "1")["status"] == "completed"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic.write_json(path, {"old": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left

    monkeypatch.undo()
    with pytest.raises(TypeError):
        atomic.write_json(path, {"bad": object()})  # fails while serializing: nothing written
    assert json.loads(path.read_text()) == {"old": 1}
    atomic.write_json(path, {"new": 2})
    assert (
        json.loads(path.read_text()) == {"new": 2} and oct(path.stat().st_mode & 0o777) == "0o644"
    )


@pytest.mark.parametrize(("every", "saved"), [(1, [1, 2, 3, 4]), (3, [3]), (0, [])])
def test_checkpoint_every_sets_the_checkpoint_cadence(tmp_path, fresh_keras, monkeypatch, every,
                                                      saved):  # fmt: skip
    import regfw

    written = []
    write_text = atomic.write_text

    def record(path, text):  # every state.json the run writes, with the state file it names
        if str(path).endswith("checkpoint/state.json"):
            state = json.loads(text)
            state_file = Path(path).parent / state["state_file"]
            written.append((state["epochs_completed"], state_file.is_file()))
        write_text(path, text)

    monkeypatch.setattr(atomic, "write_text", record)
    cfg = regfw.compose([*SMALL[:2], "trainer.histograms=false", "trainer.epochs=4", "trainer.verbose=0",
                         f"trainer.checkpoint_every={every}"])  # fmt: skip
    metrics = regfw.train(cfg, output_dir=tmp_path)
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 4
    assert written == [(epoch, True) for epoch in saved]
    assert not (tmp_path / "checkpoint").exists()  # removed at the end, or never written
