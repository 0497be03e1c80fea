"""Runs the benchmarks, prints a markdown table of ratios and writes the results as JSON.

python -m benchmarks                    # all of them, full size (about 25 minutes on 2 CPU cores)
python -m benchmarks --quick            # tiny sizes: checks that they run (the smoke test)
python -m benchmarks --only startup xla --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.timing import REPO, Row

BENCHMARKS = (
    "overhead", "orthogonality", "startup", "sweeps", "xla", "diagnostics", "power_iteration",
    "backends", "stacked",
)  # fmt: skip
PACKAGES = ("tensorflow", "keras", "hydra-core", "omegaconf", "numpy", "scikit-learn")


def machine() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "versions": versions,
        "git_commit": commit,
    }


def table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table: one ratio per line, with its goal and verdict."""
    lines = [
        "| benchmark | case | candidate / baseline | candidate | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        goal = f"<= {r.goal:g}" if r.goal is not None else ""
        met = {True: "yes", False: "no", None: ""}[r.met]
        lines.append(
            f"| {r.benchmark} | {r.case} | {r.candidate} / {r.baseline} | "
            f"{r.candidate_value:.4g} {r.unit} | {r.baseline_value:.4g} {r.unit} | "
            f"{r.ratio:.3f} | {goal} | {met} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Runs the chosen benchmarks; prints the table and the JSON file's path."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per timing")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    repeats = 1 if args.quick else args.repeats

    rows: list[Row] = []
    seconds = {}
    for name in args.only:
        start = time.perf_counter()
        rows += importlib.import_module(f"benchmarks.{name}").run(args.quick, repeats)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: done in {seconds[name]} s", file=sys.stderr)
    print(table(rows))

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc)
    path = args.out / f"{stamp:%Y-%m-%dT%H-%M-%S}{'-quick' if args.quick else ''}.json"
    result = {
        "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]),
        "time_utc": stamp.isoformat(),
        "quick": args.quick,
        "repeats": repeats,
        "machine": machine(),
        "seconds_per_benchmark": seconds,
        "rows": [r.as_dict() for r in rows],
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {path}", file=sys.stderr)
    return rows
