"""TensorBoard event files written without TensorFlow, and replaced when written again.

For the summaries regfw writes once per run or sweep (the custom-scalars layout, the HParams
session and experiment): a file `events.out.tfevents.<seconds>.regfw-<kind>` beside the run's
other event files. TensorBoard keeps the first summary it reads for a tag, so writing a kind again
(a resumed run, a rewritten report) removes regfw's earlier file of that kind, and only that.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from regfw.runs import atomic

PREFIX = "events.out.tfevents."


def file_name(kind: str, seconds: float) -> str:
    """The name of regfw's event file of `kind` written at `seconds` (sorted by time, as TF's)."""
    return f"{PREFIX}{int(seconds)}.regfw-{kind}"


def write(folder: str | Path, kind: str, summaries: Iterable[summary_pb2.Summary]) -> Path:
    """Writes `summaries` (at step 0) as regfw's event file of `kind` in `folder`; returns its path.

    Earlier files of the same kind that regfw wrote there are removed once the new one is in
    place.
    """
    folder = Path(folder)
    now = time.time()
    buffer = io.BytesIO()
    records = RecordWriter(buffer)
    records.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    for summary in summaries:
        records.write(event_pb2.Event(wall_time=now, step=0, summary=summary).SerializeToString())
    path = folder / file_name(kind, now)
    earlier = [p for p in folder.glob(f"{PREFIX}*.regfw-{kind}") if p != path]
    atomic.write_bytes(path, buffer.getvalue())
    for old in earlier:
        old.unlink(missing_ok=True)
    return path
