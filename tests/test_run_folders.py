"""Run folders are safe: regfw never deletes, overwrites or mislabels what it did not write.

Each test states one promise of the README's "Run folders" section and checks it on real runs:
folder contents before and after (bytes and modification times), exit codes and the one-line
messages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    one_error_line,
    read_metrics,
    run_train,
    run_with_fault,
    snapshot,
)

# Its module-scoped runs are made once: the whole module on one xdist worker.
pytestmark = pytest.mark.xdist_group("test_run_folders")

SMALL = [
    "data=synthetic", "data.n_samples=200", "trainer.epochs=3", "trainer.histograms=false",
    "trainer.verbose=0", "trainer.deterministic=true",
]  # fmt: skip


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    """A completed run folder (copy it before changing anything)."""
    root = tmp_path_factory.mktemp("completed")
    result = run_train(*SMALL, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.fixture
def run_copy(completed, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(completed, target)
    return target


def test_a_fresh_run_refuses_a_folder_with_the_users_files(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "mine.txt").write_text("the user's notes")
    before = snapshot(run_dir)
    result = run_train(*SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"hydra.run.dir={run_dir}: the folder is not empty and holds no regfw run" in line
    assert "choose another" in line
    assert snapshot(run_dir) == before


def test_the_current_folder_is_never_a_run_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_train(*SMALL, "hydra.run.dir=", cwd=tmp_path)
    assert result.returncode == 2
    assert "hydra.run.dir='': a run needs a folder of its own" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_fresh_run_refuses_an_earlier_run_and_leaves_it_as_it_was(run_copy, tmp_path):
    before = snapshot(run_copy)
    result = run_train(*SMALL, f"hydra.run.dir={run_copy}", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "already holds a regfw run (status completed)" in line
    assert "trainer.resume=true" in line
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["penalty=l1"], 'penalty.name: "orthogonal" -> "l1"'),
        (["penalty.scale=1e-3"], "penalty.scale: 0.0001 -> 0.001"),
        (["model.units=[16]"], "model.units: [64] -> [16]"),
        (["optimizer=sgd"], 'optimizer.name: "adam" -> "sgd"'),
        (["data.n_samples=300"], "data.n_samples: 200 -> 300"),
    ],
)
def test_resume_refuses_another_experiment_and_names_the_keys(run_copy, tmp_path, change, expected):
    before = snapshot(run_copy)
    result = run_train(
        *SMALL, *change, "trainer.resume=true", f"hydra.run.dir={run_copy}", cwd=tmp_path
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert "trainer.resume=true must continue the same experiment" in line and expected in line
    assert snapshot(run_copy) == before


def test_resume_of_a_completed_run_with_inert_changes_does_nothing(run_copy, tmp_path):
    before = snapshot(run_copy)
    result = run_train(
        *SMALL, "trainer.verbose=2", "trainer.diagnostics=false", "trainer.resume=true",
        f"hydra.run.dir={run_copy}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "already completed; nothing to do" in result.stdout
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }


def test_a_rejected_resume_leaves_the_folder_as_it_was(tmp_path):
    """The data file broke after the run was interrupted: the data check rejects the resume."""
    data = tmp_path / "data.npz"
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(120, 10)), y=rng.integers(0, 2, 120))
    args = [
        "data=file", f"data.path={data}", *SMALL[2:], "trainer.resume=true",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    killed = run_with_fault("before:metrics.json", *args, cwd=tmp_path)
    assert killed.returncode == -9
    data.write_bytes(b"no longer an npz")
    before = snapshot(tmp_path / "run")
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "is not a .npz file (a .npz is a zip archive)" in one_error_line(result)
    assert snapshot(tmp_path / "run") == before


@pytest.fixture(scope="module")
def killed_before_metrics(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """A run SIGKILLed after its last checkpoint, before metrics.json (copy it before changing it)."""
    root = tmp_path_factory.mktemp("killed")
    args = [*SMALL, "trainer.resume=true", f"hydra.run.dir={root / 'run'}"]
    return run_with_fault("before:metrics.json", *args, cwd=root), root / "run"


def _killed_copy(killed_before_metrics, target: Path) -> Path:
    killed, run_dir = killed_before_metrics
    assert killed.returncode == -9, killed.stderr
    shutil.copytree(run_dir, target)
    return target


def test_kill_before_metrics_then_resume_finishes_with_the_uninterrupted_numbers(
    completed, killed_before_metrics, tmp_path
):
    args = [*SMALL, "trainer.resume=true"]
    run_dir = _killed_copy(killed_before_metrics, tmp_path / "killed")
    # SIGKILL after the last checkpoint, before metrics.json
    assert not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["epochs_completed"] == 3
    (run_dir / "checkpoint" / "notes.txt").write_text("the user's")

    too_few = run_train(*SMALL[:2], "trainer.epochs=2", *SMALL[3:], "trainer.resume=true",
                        f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert too_few.returncode == 2
    assert "trainer.epochs=2, but the run there already completed 3 epochs" in one_error_line(
        too_few
    )
    assert (run_dir / "checkpoint" / "epoch-00003.npz").is_file()

    resumed = run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_metrics(completed), read_metrics(run_dir)  # the uninterrupted run
    assert b["status"] == "completed" and b["epochs_run"] == 3
    for section in ("train", "validation", "penalty", "diagnostics"):
        assert b[section] == a[section], section
    assert (run_dir / "model.keras").is_file()
    # Only regfw's checkpoint files went; the user's file (and so the folder) stayed.
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["notes.txt"]
    assert not (run_dir / ".regfw.lock").exists()


def test_a_kill_between_a_checkpoints_two_files_resumes_from_the_older_pair(completed, tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMALL, "trainer.resume=true", f"hydra.run.dir={run_dir}"]
    # Killed after epoch 2's model file, before the state.json that names it.
    assert run_with_fault("before:checkpoint/state.json:2", *args, cwd=tmp_path).returncode == -9
    checkpoint = run_dir / "checkpoint"
    state = json.loads((checkpoint / "state.json").read_text())
    assert (state["epochs_completed"], state["state_file"]) == (1, "epoch-00001.npz")
    assert (checkpoint / "epoch-00002.npz").is_file()
    (checkpoint / ".epoch-00002.npz.12345.tmp").write_bytes(b"a killed write")
    resumed = run_train(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "after epoch 1" in resumed.stdout
    for section in ("train", "validation", "penalty"):
        assert read_metrics(run_dir)[section] == read_metrics(completed)[section], section
    assert not checkpoint.exists()  # every file in it was regfw's, temporaries included


def test_a_checkpoint_of_another_architecture_says_what_differs(killed_before_metrics, tmp_path):
    run_dir = _killed_copy(killed_before_metrics, tmp_path / "run")  # model.units=[64]
    args = [*SMALL, "model.units=[16]", "trainer.resume=true", f"hydra.run.dir={run_dir}"]
    # The recorded config changes (as when a plugin's model changed under the same config).
    config = run_dir / ".hydra" / "config.yaml"
    assert config.read_text().count("- 64") == 1
    config.write_text(config.read_text().replace("- 64", "- 16"))
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "cannot resume: the checkpoint was saved by a different model" in line
    assert "dense/kernel (10, 64) -> (10, 16)" in line
    assert (run_dir / "checkpoint" / "epoch-00003.npz").is_file()  # not "unreadable", not moved


def test_a_dead_runs_lock_is_taken_over_with_a_message(run_copy, tmp_path):
    dead = {"pid": 999999, "host": "elsewhere", "started": "2026-01-01 00:00:00"}
    (run_copy / ".regfw.lock").write_text(json.dumps(dead))
    result = run_train(*SMALL, "trainer.resume=true", f"hydra.run.dir={run_copy}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        f"took over the lock of {run_copy} from a run that is no longer running (process 999999 "
        "on elsewhere started 2026-01-01 00:00:00)" in result.stdout
    )
    assert not (run_copy / ".regfw.lock").exists()


GATE = '''"""A zero penalty whose steps wait until a file exists: a run that trains when a test says."""

import os
import time

import tensorflow as tf

from regfw import penalties


def _wait():
    while not os.path.exists({gate!r}):
        time.sleep(0.05)
    return 0.0


@penalties.register("gate")
def gate(w):
    """0, once the gate file exists (each time the loss is computed)."""
    return 0.0 * tf.reduce_sum(w) + tf.py_function(_wait, [], tf.float32)
'''


def test_two_runs_in_one_folder_the_second_is_refused(tmp_path):
    run_dir, gate = tmp_path / "run", tmp_path / "open"
    plugin = tmp_path / "gate.py"
    plugin.write_text(GATE.format(gate=str(gate)))
    # The first run holds the folder, waiting in its first step (without using the CPU), until
    # the second has been refused.
    overrides = [*SMALL, "penalty=custom", "penalty.name=gate", "penalty.include=[output/kernel]",
                 f"plugins=[{plugin}]", f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    first = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *overrides],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The record is written after the lock is taken, once every check passed.
        deadline = time.monotonic() + 120
        while not (run_dir / ".hydra" / "config.yaml").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = run_train(*overrides, "trainer.resume=true", cwd=tmp_path)
        assert second.returncode == 2
        line = one_error_line(second)
        assert f"another regfw run is using this folder (process {first.pid} on" in line
        assert first.poll() is None  # the first run goes on
    finally:
        gate.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert read_metrics(run_dir)["epochs_run"] == 3
    assert not (run_dir / ".regfw.lock").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts a small tmpfs (a real file system that fills up); needs root, as CI runs."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def make(size: str, *options: str) -> Path:
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
             str(mount)], capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
        return mount

    yield make
    subprocess.run(["umount", str(mount)], check=False, capture_output=True)


def test_model_keras_on_a_full_disk_keeps_the_checkpoint(tmpfs, tmp_path):
    # One checkpoint, at the end: it (16 KiB) fits in 72 KiB with the record, the log and the
    # event files (about 60 KiB in all); the model.keras beside it (about 36 KiB more) does not.
    run_dir = tmpfs("72k") / "run"
    args = [*SMALL, "trainer.checkpoint_every=3", "trainer.resume=true", f"hydra.run.dir={run_dir}"]
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    line = one_error_line(result)
    assert f"could not write {run_dir / 'model.keras'}: no space left on the device" in line
    assert "bytes free" in line and "the previous file is kept" in line
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # no temporaries
    assert not (run_dir / "model.keras").exists() and not (run_dir / "metrics.json").exists()
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["epochs_completed"] == 3  # kept: model.keras never made it to disk

    subprocess.run(["mount", "-o", "remount,size=4m", str(run_dir.parent)], check=True)
    again = run_train(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "after epoch 3" in again.stdout
    assert read_metrics(run_dir)["epochs_run"] == 3 and (run_dir / "model.keras").is_file()
    assert not (run_dir / "checkpoint").exists()


def test_a_read_only_folder_is_one_line(tmpfs, tmp_path):
    disk = tmpfs("1m", "ro")
    result = run_train(*SMALL, f"hydra.run.dir={disk / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"hydra.run.dir={disk / 'run'}: cannot write in {disk}" in line


def test_a_file_size_limit_is_one_line_and_keeps_no_temporaries(tmp_path):
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # The checkpoint of a 256-unit MLP (37 KB) and the default one's model.keras (32 KB).
    cases = (("epoch-00001.npz", ["model.units=[256]"]),
             ("model.keras", ["trainer.checkpoint_every=0"]))  # fmt: skip
    for name, extra in cases:
        run_dir = tmp_path / name
        result = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *SMALL, *extra, f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit,
        )  # fmt: skip
        assert result.returncode == 4
        line = one_error_line(result)
        assert f"could not write {run_dir}" in line and name in line
        # The state file is serialized first, so its size is known; model.keras is not.
        assert "file-size limit" in line
        assert ("41," in line and "bytes needed" in line) if name.endswith(".npz") else (
            "more than the" in line)  # fmt: skip
        assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_a_run_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file")
    result = run_train(*SMALL, f"hydra.run.dir={tmp_path / 'taken'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "is a file, not a folder" in one_error_line(result)
    assert (tmp_path / "taken").read_text() == "a file"
