"""`python -m regfw.report <sweep dir>`: writes and prints the report of a finished sweep.

See `regfw.sweeps.report` for what the report holds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from regfw.sweeps.report import job_dirs, write_report


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m regfw.report <sweep dir>`: writes and prints the report of a finished sweep."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m regfw.report <sweep dir>", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    sweep_dir = Path(args[0])
    if not job_dirs(sweep_dir):
        print(
            f"regfw: error: {sweep_dir}: no job folders (with .hydra/overrides.yaml) here; "
            "give a sweep folder such as outputs/multirun/<date>/<time>",
            file=sys.stderr,
        )
        return 2
    write_report(sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
