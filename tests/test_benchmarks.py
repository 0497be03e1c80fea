"""The benchmark command runs end to end at tiny sizes, so the benchmarks never rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.run import BENCHMARKS
from tests.conftest import REPO


def test_quick_benchmarks_print_the_table_and_write_json(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    benchmarks = {line.split(" | ")[0].removeprefix("| ") for line in table[1:]}
    assert benchmarks == set(BENCHMARKS)
    (result_file,) = tmp_path.glob("*-quick.json")
    result = json.loads(result_file.read_text())
    assert result["quick"] is True
    assert result["machine"]["versions"]["tensorflow"] and result["machine"]["cpu_count"]
    assert all(row["ratio"] > 0 for row in result["rows"])
    assert len(result["rows"]) == len(table) - 1
