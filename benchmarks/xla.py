"""5. XLA: regfw's step time with `trainer.jit_compile=true` vs false, for each penalty."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from benchmarks.overhead import CASES
from benchmarks.timing import Row, interleaved, regfw_step_time

PENALTIES = ["none", "clip", "l1", "l2", "orthogonal"]


def run(quick: bool, repeats: int) -> list[Row]:
    """Times the MLP of the overhead benchmark with and without XLA; returns on / off."""
    case, (full, small) = next(iter(CASES.items()))
    rows = []
    for penalty in PENALTIES[-1:] if quick else PENALTIES:
        overrides = [
            *(small if quick else full),
            f"penalty={penalty}",
            "trainer.verbose=0",
            "trainer.histograms=false",
            f"trainer.epochs={2 if quick else 5}",
        ]
        with tempfile.TemporaryDirectory() as tmp:
            times = interleaved(
                {
                    jit: partial(
                        regfw_step_time, [*overrides, f"trainer.jit_compile={jit}"], Path(tmp)
                    )
                    for jit in ("true", "false")
                },
                repeats,
            )
        rows.append(
            Row(
                "xla",
                f"penalty={penalty}, {case}",
                "jit_compile=true",
                "jit_compile=false",
                times["true"],
                times["false"],
                "s/step",
            )
        )
    return rows
