"""Keeps one process's memory flat over many runs (Hydra's in-process sweeps, notebook loops).

`keras.backend.clear_session()` is not enough with TensorFlow 2.21: every traced
`tf.custom_gradient` (Keras's compiled train step uses one) registers its gradient function under a
new name (`CustomGradient-<n>`) in TensorFlow's process-wide gradient registry and never removes it.
The function's closure holds the traced graph, so each run left its whole train step behind
(about 4-6 MB for a small MLP). A run's gradient functions are only needed while its graphs are
traced; after `clear_session()` the earlier runs' entries are dead and can go.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "CustomGradient-"


def forget_gradient_functions() -> int:
    """Removes the `tf.custom_gradient` functions earlier runs registered; returns how many.

    Call it after `keras.backend.clear_session()`, when no earlier model is in use. Does nothing if
    TensorFlow's (private) registry is not where TensorFlow 2.16-2.21 keep it.
    """
    import keras

    if keras.config.backend() != "tensorflow":
        return 0
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):
        return 0
    names = [name for name in registry if name.startswith(PREFIX)]
    for name in names:
        del registry[name]
    return len(names)


def resident_memory_mb() -> float | None:
    """The process's resident memory now (VmRSS, Linux), in MiB; None where it is unknown."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
