"""`python -m benchmarks.peak OUT python-args...`: runs `python <args>`, writes its peak RSS to OUT.

Linux counts the resident memory a process had before `exec` in the `ru_maxrss` of what it
becomes, and a child starts as a copy of its parent: a child of the benchmark process (which holds
TensorFlow) would report at least the benchmark's own memory. This small process in between
starts the measured one from a small image, so `wait4` reports the measured process alone.
"""

import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    """Runs the command, writes its peak RSS in KiB to the file named first, exits with its code."""
    out, *args = sys.argv[1:]
    process = subprocess.Popen([sys.executable, *args])
    _, status, usage = os.wait4(process.pid, 0)
    Path(out).write_text(str(usage.ru_maxrss))
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
