"""Runs in one process leave nothing behind: a sweep's memory stays flat job after job."""

from __future__ import annotations

import gc

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


def test_resident_memory_is_read():
    assert memory.resident_memory_mb() > 10
