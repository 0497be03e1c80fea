"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

Every file regfw writes into a run folder goes through here: it is written to a temporary file in
the same folder, flushed to disk and renamed over the target. When the disk is full (or a file
size limit is hit) the temporary file is removed, the previous file stays, and the error is an
`OutputError` that says which file and how much space it needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from regfw.errors import OutputError

# Errors that mean "this file cannot be written here", as opposed to a bug.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file is larger than the file-size limit (ulimit -f)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "an I/O error",
}


def output_error(
    path: Path, error: OSError, needed: int | None = None, written: int | None = None
) -> OutputError | None:
    """Returns the one-line `OutputError` for a failed write of `path`, or None for other errors.

    Args:
        path: The file that could not be written.
        error: The error writing it.
        needed: Its size, when known.
        written: How much of it was written before the error, when its size is not known.
    """
    reason = _WRITE_ERRORS.get(error.errno)
    if reason is None:
        return None
    details = []
    if needed is not None:
        details.append(f"{needed:,} bytes needed")
    elif written:
        details.append(f"more than the {written:,} bytes written")
    with contextlib.suppress(OSError):
        details.append(f"{shutil.disk_usage(path.parent).free:,} bytes free")
    suffix = f" ({', '.join(details)})" if details else ""
    return OutputError(f"could not write {path}: {reason}{suffix}; the previous file is kept")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` when the block succeeds.

    For writers that need a file name (Keras's `model.save` wants one ending in `.keras`: pass
    that as `suffix`). If the block or the rename fails, the temporary file is removed and `path`
    is left as it was.

    Raises:
        OutputError: If the disk is full, a size limit is hit or the folder is not writable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        written = tmp.stat().st_size if tmp.is_file() else None
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and (converted := output_error(path, error, None, written)):
            raise converted from error
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename.

    Raises:
        OutputError: If the disk is full, a size limit is hit or the folder is not writable.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        if converted := output_error(path, error, len(data)):
            raise converted from error
        raise
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and (converted := output_error(path, error, len(data))):
            raise converted from error
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` as UTF-8, atomically (see `write_bytes`)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
