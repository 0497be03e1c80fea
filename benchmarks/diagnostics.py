"""6. Diagnostics logging on vs off: regfw's step time with weight histograms every epoch or none.

This branch has no per-layer diagnostics yet; the weight histograms (`trainer.histograms`) are the
diagnostics it logs, so they are what is measured.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from benchmarks.overhead import CASES
from benchmarks.timing import Row, interleaved, regfw_step_time


def run(quick: bool, repeats: int) -> list[Row]:
    """Times both models of the overhead benchmark; returns histograms on / off."""
    rows = []
    for case, (full, small) in list(CASES.items())[: 1 if quick else None]:
        overrides = [
            *(small if quick else full),
            "penalty=orthogonal",
            "trainer.verbose=0",
            f"trainer.epochs={2 if quick else 6}",
        ]
        with tempfile.TemporaryDirectory() as tmp:
            times = interleaved(
                {
                    on: partial(
                        regfw_step_time, [*overrides, f"trainer.histograms={on}"], Path(tmp) / on
                    )
                    for on in ("true", "false")
                },
                repeats,
            )
        rows.append(
            Row(
                "diagnostics",
                case,
                "histograms on",
                "histograms off",
                times["true"],
                times["false"],
                "s/step",
                goal=1.05,
                note="per-layer diagnostics do not exist in this branch",
            )
        )
    return rows
