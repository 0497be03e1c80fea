"""Weight penalties: Keras regularizers written with `keras.ops` only, plus their registry.

Every penalty is a `keras.regularizers.Regularizer` whose `__call__(w)` returns `scale * value(w)`.
The scale lives in a non-trainable `keras.Variable`, so it can change during training without
retracing the compiled train step. Values are computed in float32 for float16/bfloat16 weights.

Use `get(name, **params)` to build one, `available()` to list names and `register(name)` to add your
own (a `Penalty` subclass, or a function `fn(w, **params) -> scalar`). May import:
`regfw.registry`, `regfw.errors` (penalties need nothing else of regfw).
"""

from regfw.penalties import article, catalogue, keras_builtin  # noqa: F401 - they register
from regfw.penalties.base import (
    Combined,
    Penalty,
    available,
    check_iterations,
    check_number,
    check_scale,
    get,
    register,
)
from regfw.penalties.catalogue import PowerIterationPenalty

__all__ = [
    "Combined",
    "Penalty",
    "PowerIterationPenalty",
    "available",
    "check_iterations",
    "check_number",
    "check_scale",
    "get",
    "register",
]
