"""The benchmark command runs end to end at tiny sizes, so the benchmarks never rot.

One test per benchmark (`--only <name>`), so that the suite's workers share them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.run import BENCHMARKS
from tests.conftest import REPO


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_benchmark_prints_its_rows_and_writes_json(tmp_path, name):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", name, "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| benchmark | case | candidate / baseline |")
    assert {line.split(" | ")[0].removeprefix("| ") for line in table[1:]} == {name}
    (result_file,) = tmp_path.glob("*-quick.json")
    result = json.loads(result_file.read_text())
    assert result["quick"] is True
    assert result["machine"]["versions"]["tensorflow"] and result["machine"]["cpu_count"]
    assert all(row["ratio"] > 0 for row in result["rows"])
    assert len(result["rows"]) == len(table) - 1 >= 1
