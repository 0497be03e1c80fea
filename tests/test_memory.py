"""Runs in one process leave nothing behind: a sweep's memory stays flat job after job."""

from __future__ import annotations

import gc
import os
import subprocess

import numpy as np
import pytest

import regfw
from regfw.training import memory

TINY = ["data=synthetic", "data.n_samples=200", "trainer.epochs=1", "trainer.verbose=0",
        "trainer.histograms=false"]  # fmt: skip


def _train_step_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(
        isinstance(o, FuncGraph) and o.name.startswith("one_step_on_data") for o in gc.get_objects()
    )


def test_earlier_runs_train_steps_are_freed(tmp_path, fresh_keras):
    import keras

    cfg = regfw.compose(TINY)
    for run in range(3):
        regfw.train(cfg, output_dir=tmp_path / str(run))
        assert _train_step_graphs() <= 2, f"run {run}: earlier runs' train steps are still alive"
    keras.backend.clear_session(free_memory=True)
    assert memory.forget_gradient_functions() > 0  # the last run's
    assert _train_step_graphs() == 0


def _ps_rss_mb() -> float:
    """This process's resident memory as `ps` reports it (KiB), in MiB."""
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return int(out.strip()) / 1024


def test_resident_memory_is_read():
    # Against `ps`, and it follows an allocation of 200 MiB (touched, so resident).
    before = memory.resident_memory_mb()
    assert before == pytest.approx(_ps_rss_mb(), abs=5)  # ps runs a moment later
    block = np.ones(200 * 2**20, dtype=np.uint8)
    after = memory.resident_memory_mb()
    assert after - before == pytest.approx(200, abs=10)
    assert after == pytest.approx(_ps_rss_mb(), abs=5)
    del block
