"""Scale schedules: the multiplier of a penalty's configured scale at each epoch (0-based).

- `constant`: 1.
- `warmup`: `min(1, epoch / epochs)`, a linear ramp from 0 to the full scale.
- `step`: `factor ** (epoch // every)`; with `factor=0` the penalty is on for `every` epochs, then
  off (the schedule Bansal et al. use for SRIP).
- `cosine`: `final + (1 - final) * (1 + cos(pi * min(epoch, epochs) / epochs)) / 2`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SCHEDULES = ("constant", "warmup", "step", "cosine")
# The keys of a `schedule` config each schedule reads (besides `name`); the others are inert.
PARAMETERS = {"constant": (), "warmup": ("epochs",), "step": ("every", "factor"),
              "cosine": ("epochs", "final")}  # fmt: skip


def multiplier(schedule: Mapping[str, Any] | None, epoch: int) -> float:
    """Returns the fraction of the configured scale to use in `epoch` (counted from 0).

    Args:
        schedule: The term's `schedule` config (`name` plus its keys); None means constant.
        epoch: The epoch, from 0.
    """
    name = (schedule or {}).get("name", "constant")
    if name == "constant":
        return 1.0
    if name == "warmup":
        return min(1.0, epoch / schedule["epochs"])
    if name == "step":
        return float(schedule["factor"] ** (epoch // schedule["every"]))
    if name == "cosine":
        progress = min(epoch, schedule["epochs"]) / schedule["epochs"]
        final = schedule["final"]
        return final + (1 - final) * (1 + math.cos(math.pi * progress)) / 2
    raise ValueError(f"schedule.name={name!r}: expected one of {', '.join(SCHEDULES)}")
