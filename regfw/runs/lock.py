"""One run per folder at a time: an exclusive lock file in the run folder.

The lock is `fcntl.flock` on `<run>/.regfw.lock`, held for the life of the run: the kernel releases
it when the process ends, however it ends, so a lock left by a killed process is stale by
construction and the next run takes it over (and says so). The file records who holds it (process,
host, start time, command), for the message a second run gets. Works on local file systems and
on NFSv4, where `flock` is emulated with POSIX locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from regfw.errors import RunFolderError

NAME = ".regfw.lock"


class RunLock:
    """The lock of one run folder.

    Args:
        folder: The run folder (it must exist).
        where: How to name the folder in messages (`hydra.run.dir=outputs/x`).
    """

    def __init__(self, folder: Path, where: str) -> None:
        self.path = Path(folder) / NAME
        self.where = where
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Takes the lock.

        Returns:
            A message when the lock of a process that is no longer running was taken over, else
            None.

        Raises:
            RunFolderError: If a running process holds the lock.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read(fd))
                os.close(fd)
                raise RunFolderError(
                    f"{self.where}: another regfw run is using this folder "
                    f"({holder}); wait for it to end, or choose another folder"
                ) from None
            # The holder may have unlinked the file between our open and our lock: retry then.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner()).encode(), 0)
        self._fd = fd
        if previous:
            return (
                f"took over the lock of {self.path.parent} from a run that is no longer running "
                f"({_describe(previous)})"
            )
        return None

    def release(self) -> None:
        """Removes the lock file and releases the lock (no-op if not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _owner() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _read(fd: int) -> dict[str, object]:
    try:
        text = os.pread(fd, 65536, 0).decode()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?"}


def _describe(owner: dict[str, object]) -> str:
    parts = [f"process {owner.get('pid', '?')}"]
    if owner.get("host"):
        parts.append(f"on {owner['host']}")
    if owner.get("started"):
        parts.append(f"started {owner['started']}")
    return " ".join(parts)


def _same_file(fd: int, path: Path) -> bool:
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (info.st_dev, info.st_ino) == (opened.st_dev, opened.st_ino)
