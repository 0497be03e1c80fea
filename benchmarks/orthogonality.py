"""2. Orthogonality penalty, value and gradient: regfw vs the article's formula vs Keras's own.

regfw computes `||W^T W - I||^2` on the smaller Gram matrix; the article always forms `W^T W`.
Keras's `OrthogonalRegularizer` is a different penalty (mean |cosine| between rows), timed for
reference only. Each is a compiled `tf.function` returning the value and the gradient; the values
of regfw and the article must agree (rtol 1e-5) on a float64 input: the article's formula is
evaluated in float64, so the check tests regfw's value, not float32 summation order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.overhead import article_orthogonality
from benchmarks.timing import Row, interleaved

SHAPES = [(4096, 256), (256, 4096), (1024, 1024), (3, 3, 256, 512)]
QUICK_SHAPES = [(64, 16), (16, 64), (32, 32), (3, 3, 4, 8)]
WIDE = (256, 4096)


def _compiled(fn: Callable[[Any], Any], variable: Any) -> Callable[[], Any]:
    import tensorflow as tf

    @tf.function
    def value_and_gradient() -> Any:
        with tf.GradientTape() as tape:
            value = fn(variable)
        return value, tape.gradient(value, variable)

    return value_and_gradient


def _seconds_per_call(step: Callable[[], Any], calls: int) -> float:
    step()[0].numpy()  # trace and warm up
    start = time.perf_counter()
    for _ in range(calls):
        value, gradient = step()
    value.numpy(), gradient.numpy()
    return (time.perf_counter() - start) / calls


def implementations() -> dict[str, Callable[[Any], Any]]:
    """The three penalties on a weight tensor."""
    import keras
    from keras import ops

    from regfw import penalties

    ours = penalties.get("orthogonal", scale=1.0)
    keras_own = keras.regularizers.OrthogonalRegularizer(factor=1.0)
    return {
        "regfw": ours,
        "article": article_orthogonality,
        "keras OrthogonalRegularizer": lambda w: keras_own(ops.reshape(w, (-1, w.shape[-1]))),
    }


def offdiag_shortcut(w: Any) -> Any:
    """`||W W^T||_F^2 - sum_j ||W[:, j]||^4`: the small-Gram form regfw does not use."""
    from keras import ops

    m = ops.reshape(w, (-1, w.shape[-1]))
    small = ops.matmul(m, ops.transpose(m))
    return ops.sum(ops.square(small)) - ops.sum(ops.square(ops.sum(ops.square(m), axis=0)))


def offdiag_rows(quick: bool, repeats: int) -> list[Row]:
    """orthogonal_offdiag on the full Gram matrix vs the small-Gram shortcut: time, and error.

    The error is the shortcut's, in float32, on a wide W with nearly orthogonal rows (where
    training drives it), against float64 NumPy.
    """
    import keras

    from regfw import penalties

    shape = (16, 64) if quick else WIDE
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[0])))
    w = (q.T * 10.0 + 1e-3 * rng.normal(size=shape)).astype(np.float32)
    m = w.astype(np.float64)
    gram = m.T @ m
    exact = float(np.sum((gram * (1 - np.eye(len(gram)))) ** 2))
    shortcut_error = abs(float(offdiag_shortcut(keras.ops.convert_to_tensor(w))) - exact) / exact
    full = penalties.get("orthogonal_offdiag", scale=1.0)
    full_error = abs(float(full(keras.ops.convert_to_tensor(w))) - exact) / exact
    variable = keras.Variable(w)
    calls = 3 if quick else 20
    steps = {"full": _compiled(full, variable), "shortcut": _compiled(offdiag_shortcut, variable)}
    times = interleaved(
        {name: partial(_seconds_per_call, step, calls) for name, step in steps.items()}, repeats
    )
    note = (
        f"float32 relative error on nearly orthogonal rows: full Gram {full_error:.1e}, "
        f"shortcut {shortcut_error:.1e}"
    )
    return [
        Row("orthogonality", f"orthogonal_offdiag {shape} (wide)", "full (n, n) Gram (regfw)",
            "small-Gram shortcut", times["full"], times["shortcut"], "s/call", note=note)
    ]  # fmt: skip


def check_values(shape: tuple[int, ...], rng: np.random.Generator) -> float:
    """Returns the relative difference of regfw's value from the article's (in float64).

    Raises:
        AssertionError: If it exceeds 1e-5.
    """
    import tensorflow as tf

    w = tf.constant(rng.normal(0, 1 / np.sqrt(shape[-1]), shape))
    ours, article = (float(f(w)) for f in list(implementations().values())[:2])
    difference = abs(ours - article) / abs(article)
    assert difference <= 1e-5, f"{shape}: regfw {ours} != article {article}"
    return difference


def run(quick: bool, repeats: int) -> list[Row]:
    """Times value+gradient for each shape; returns regfw / article and Keras's / article."""
    import keras

    rng = np.random.default_rng(0)
    rows = []
    for shape in QUICK_SHAPES if quick else SHAPES:
        difference = check_values(shape, rng)
        variable = keras.Variable(rng.normal(0, 1 / np.sqrt(shape[-1]), shape).astype("float32"))
        calls = 3 if quick else max(3, int(2e9 / (np.prod(shape) * max(shape[-1], 64))))
        steps = {name: _compiled(fn, variable) for name, fn in implementations().items()}
        times = interleaved(
            {name: partial(_seconds_per_call, step, calls) for name, step in steps.items()},
            repeats,
        )
        case = f"{shape}" + (" (wide)" if shape == WIDE else "")
        note = f"value vs the article's in float64: rel diff {difference:.1e}"
        rows += [
            Row(
                "orthogonality",
                case,
                "regfw",
                "article formula",
                times["regfw"],
                times["article"],
                "s/call",
                goal=0.2 if shape == WIDE else None,
                note=note,
            ),
            Row(
                "orthogonality",
                case,
                "keras OrthogonalRegularizer",
                "article formula",
                times["keras OrthogonalRegularizer"],
                times["article"],
                "s/call",
                note="a different penalty (mean |cos| of rows); timing only",
            ),
        ]
    return rows + offdiag_rows(quick, repeats)
