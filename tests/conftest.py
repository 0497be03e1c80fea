"""Shared fixtures: subprocess runs of train.py, event-file reading, a clean Keras session."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_train(
    *args: str, cwd: Path, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess:
    """Runs `python train.py <args>` in `cwd` and returns the finished process.

    The process is forked from a warm one that has imported what `train.py` imports
    (`tests/warm.py`), unless `fresh`: tests of how a process starts (what it imports, what
    TensorFlow says while it does) ask for a fresh `python train.py`.
    """
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return _run([str(REPO / "train.py"), *args], cwd, env, timeout, fresh)


def _run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float, fresh: bool
) -> subprocess.CompletedProcess:
    """`python <command>`: forked from a warm process of its backend, or (`fresh`) started anew."""
    backend = _backend_of(command, env)
    if fresh or backend is None:
        return subprocess.run(
            [sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
    import warm

    with tempfile.TemporaryDirectory(prefix="regfw-warm-") as scratch:
        return warm.run(command, Path(cwd), env, timeout, backend, Path(scratch))


def _backend_of(args: list[str], env: dict[str, str]) -> str | None:
    """The backend a command runs on, as its arguments say (None: they do not say simply)."""
    chosen = [a.split("=", 1)[1] for a in args if a.startswith("trainer.backend=")]
    backend = chosen[-1] if chosen else env.get("KERAS_BACKEND", "tensorflow")
    return backend if backend in ("tensorflow", "jax") else None


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder` (but a dead run's lock): relative path -> (size, mtime, sha1)."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha1(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".regfw.lock"
    }


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `regfw: error:` line a failed command printed (and nothing else on stderr)."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regfw: error: "), result.stderr
    return lines[0]


def run_with_fault(fault: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`train.py` that kills itself with SIGKILL at an exact write (see tests/faults.py)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # tests/faults.py imports regfw: this checkout's, whatever else is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    command = [str(REPO / "tests" / "faults.py"), fault, str(REPO / "train.py"), *args]
    return _run(command, cwd, env, 300, fresh=False)


def layer_weights(model) -> list:
    """A regfw model's weights without its penalty state, as a plain Keras model has them.

    `model.weights` ends with `penalty_state/...` (the scales, power-iteration blocks), which a
    model without regfw's penalties (a twin, a plain `keras.saving.load_model`) does not have.
    """
    own = [v for v in model.weights if not v.path.startswith("penalty_state/")]
    assert len(own) == len(model.weights) - len(model.penalty_state.weights)
    return [v.numpy() for v in own]


def read_metrics(run_dir: Path) -> dict:
    """Returns a run folder's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def event_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Reads every scalar-like tensor summary in a TensorBoard log folder: tag -> [(step, value)]."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
        if all(np.ndim(v) == 0 and v.dtype.kind == "f" for v in values):
            scalars[tag] = [(e.step, float(v)) for e, v in zip(events, values, strict=True)]
    return scalars


def event_tags(log_dir: Path) -> list[str]:
    """Returns every tensor-summary tag in a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc.Tags()["tensors"]


def train_step_function(model):
    """The tf.function Keras's TF trainer wraps one training step in (inside `train_function`)."""
    import inspect

    step = inspect.getclosurevars(model.train_function).nonlocals["one_step_on_data"]
    return getattr(step, "__wrapped__", step)


# The longest modules (minutes of work each, most in one xdist group that runs on one worker)
# start first: the other worker then takes the short tests meanwhile, instead of idling at the
# end while one worker finishes a long group.
LONGEST_FIRST = ("test_slurm.py", "test_stacked.py", "test_benchmarks.py", "test_sweeps.py",
                 "test_backends.py", "test_run_folders.py")  # fmt: skip


_OWN_JAX_CACHE: list[str] = []  # the cache folder this process made (the xdist controller's)


def pytest_configure(config) -> None:
    """Gives the session's JAX processes one persistent compilation cache (JAX's own).

    Every JAX run of the suite compiles the same few programs (the default MLP's steps, the
    stacked launcher's epoch); with `JAX_COMPILATION_CACHE_DIR` a process loads what an earlier
    one compiled (the default JAX run: 14.3 s -> 10.7 s here, the same numbers). The folder is
    new for each session, made before xdist starts its workers (they inherit it), and removed
    at the end: no test sees a cache from an earlier session. A cache the caller set is kept.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        _OWN_JAX_CACHE.append(tempfile.mkdtemp(prefix="regfw-tests-jax-cache-"))
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_JAX_CACHE[0]
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_unconfigure(config) -> None:
    for folder in _OWN_JAX_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Orders the modules longest first (`LONGEST_FIRST`), each module's tests as they were."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: modules stay whole


def pytest_collection_finish(session) -> None:
    """Moves what collection imported (TensorFlow, Keras: about 500,000 objects) out of the GC's way.

    Every `gc.collect()` (`keras.backend.clear_session()` calls one, twice per `fresh_keras` test)
    would otherwise walk all of them: 0.2 s each. Objects made later, by the tests, are collected
    as before (`gc.get_objects()` lists only those).
    """
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session) -> None:
    """Ends the warm `train.py` servers this process started (`tests/warm.py`)."""
    warm = sys.modules.get("warm")
    if warm is not None:
        warm.close_all()


@pytest.fixture(params=["tensorflow", "jax"])
def backend(request) -> str:
    """The Keras backend of a run in a subprocess: a test that takes it runs on both backends."""
    return request.param


@pytest.fixture
def fresh_keras():
    """Seeds Keras and clears its session before and after an in-process training test."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
