"""Runs `train.py` with a deterministic fault: the process kills itself at a chosen write.

    python tests/faults.py <fault> train.py <overrides...>

<fault> is `before:<suffix>[:<n>]` (SIGKILL just before the n-th atomic write, default the first,
of a file whose path ends with <suffix>) or `after:<suffix>[:<n>]` (just after it). A kill at an
exact point replaces polling a running process, which races with the writes it waits for.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

from regfw.runs import atomic


def main() -> None:
    fault, script, *overrides = sys.argv[1:]
    when, suffix, *count = fault.split(":")
    limit = int(count[0]) if count else 1
    real = atomic.write_text
    seen = 0

    def write_text(path: str | os.PathLike, text: str) -> None:
        nonlocal seen
        matched = str(path).endswith(suffix)
        seen += matched
        if matched and seen == limit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, text)
        if matched and seen == limit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    atomic.write_text = write_text
    sys.argv = [script, *overrides]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
