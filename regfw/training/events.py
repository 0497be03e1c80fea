"""TensorBoard event files and summaries, written without TensorFlow.

`scalars`, `histogram_summary` and `text` build the summaries regfw's TensorBoard callback
writes (one `Summary` per writer and epoch instead of one TensorFlow op per value: the histograms
of a model's weights took about 80 ms an epoch as TensorFlow ops, most of a stacked job's
logging), and
`EventWriter` appends them to an event file named and framed as `tf.summary`'s writers do. A JAX
run does not import TensorFlow at all (6 s of a short run on a 2-core machine).

For the summaries regfw writes once per run or sweep (the custom-scalars layout, the HParams
session and experiment): a file `events.out.tfevents.<seconds>.regfw-<kind>` beside the run's
other event files. TensorBoard keeps the first summary it reads for a tag, so writing a kind again
(a resumed run, a rewritten report) removes regfw's earlier file of that kind, and only that.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterable
from pathlib import Path

import google_crc32c
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import summary_v2 as text_summary

from regfw.runs import atomic

PREFIX = "events.out.tfevents."
BUCKETS = 30  # TensorBoard's default, as `tf.summary.histogram`


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (TensorBoard's stub computes it in pure Python)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord, framed as TensorBoard's `RecordWriter` frames it (length, CRCs, data).

    The same bytes, with the CRC-32C from `google-crc32c` (C): TensorBoard's pure-Python one
    was about 2 ms a record, most of a stacked job's logging.
    """
    header = struct.pack("<Q", len(data))
    return b"".join(
        (header, struct.pack("<I", _masked_crc32c(header)), data,
         struct.pack("<I", _masked_crc32c(data)))
    )  # fmt: skip


def _scalar_tensor(value: float) -> tensor_pb2.TensorProto:
    """A float32 scalar as `tensor_util.make_tensor_proto(np.float32(value))` builds it."""
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        float_val=[np.float32(value)],
    )


def _float64_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A float64 array as `tensor_util.make_tensor_proto(array, dtype=np.float64)` builds it."""
    array = np.ascontiguousarray(array, dtype=np.float64)
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
        ),
        tensor_content=array.tobytes(),
    )


def scalars(values: dict[str, float]) -> summary_pb2.Summary:
    """One summary of scalars, as `tf.summary.scalar` writes each (a float32 tensor)."""
    summary = summary_pb2.Summary()
    meta = scalar_metadata.create_summary_metadata(display_name=None, description=None)
    for tag, value in values.items():
        summary.value.add(tag=tag, metadata=meta, tensor=_scalar_tensor(value))
    return summary


def histogram_buckets(data: np.ndarray, bucket_count: int = BUCKETS) -> np.ndarray:
    """The `(bucket_count, 3)` rows `[left, right, count]` that `tf.summary.histogram` computes.

    The same buckets as TensorBoard's `summary_v2._buckets` (equal widths from the minimum to
    the maximum, the maximum counted in the last bucket), with NumPy's `bincount` in place of a
    one-hot matrix. Non-finite entries (a diverging run) are left out.
    """
    data = np.asarray(data, dtype=np.float64).reshape(-1)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = data.min(), data.max()
    if low == high:
        counts = np.zeros(bucket_count)
        counts[-1] = data.size
        return np.stack([np.full(bucket_count, high), np.full(bucket_count, high), counts], 1)
    width = (high - low) / bucket_count
    index = np.minimum(np.floor((data - low) / width).astype(np.int64), bucket_count - 1)
    counts = np.bincount(index, minlength=bucket_count).astype(np.float64)
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts], 1)


def stacked_histogram_buckets(data: np.ndarray, bucket_count: int = BUCKETS) -> np.ndarray:
    """`histogram_buckets` of each row of `(jobs, ...)` data at once: `(jobs, bucket_count, 3)`.

    Row `j` is `histogram_buckets(data[j])`, with the same arithmetic on every element; rows
    with non-finite or constant entries (rare: a diverged or untouched weight) take that path.
    """
    data = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    out = np.empty((len(data), bucket_count, 3))
    if data.shape[1] == 0:
        out[:] = 0.0
        return out
    low, high = data.min(axis=1), data.max(axis=1)  # NaN where a row has one
    plain = np.isfinite(low) & np.isfinite(high) & (low < high)
    for row in np.flatnonzero(~plain):
        out[row] = histogram_buckets(data[row], bucket_count)
    if plain.any():
        rows, low, high = data[plain], low[plain], high[plain]
        width = (high - low) / bucket_count
        index = np.floor((rows - low[:, None]) / width[:, None]).astype(np.int64)
        index = np.minimum(index, bucket_count - 1) + bucket_count * np.arange(len(rows))[:, None]
        counts = np.bincount(index.reshape(-1), minlength=len(rows) * bucket_count)
        edges = np.linspace(low, high, bucket_count + 1, axis=1)
        edges[:, -1] = high
        out[plain] = np.stack(
            [edges[:, :-1], edges[:, 1:], counts.reshape(len(rows), bucket_count)], axis=2
        )
    return out


def histogram_summary(buckets: dict[str, np.ndarray]) -> summary_pb2.Summary:
    """One summary of histograms, as `tf.summary.histogram` writes each, from their buckets.

    Args:
        buckets: Tag to `histogram_buckets`' rows.
    """
    summary = summary_pb2.Summary()
    meta = histogram_metadata.create_summary_metadata(display_name=None, description=None)
    for tag, rows in buckets.items():
        summary.value.add(tag=tag, metadata=meta, tensor=_float64_tensor(rows))
    return summary


def text(tag: str, value: str) -> summary_pb2.Summary:
    """One text summary, as `tf.summary.text` writes it (a string tensor, Markdown)."""
    return text_summary.text_pb(tag, value)


class EventWriter:
    """Appends summaries to a new event file in `folder`, as a `tf.summary` file writer does.

    The file is `events.out.tfevents.<seconds>.<host>.<pid>.<n>.v2` (TensorFlow's names), created
    at the first write and never an existing file; each write is one record, flushed.

    Args:
        folder: The folder of the file (made if missing), e.g. a run's `train/`.
    """

    _numbers = itertools.count()

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._file: io.BufferedWriter | None = None

    def write(self, summary: summary_pb2.Summary, step: int) -> None:
        """Writes `summary` at `step`."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            now = time.time()
            name = (
                f"{PREFIX}{int(now)}.{socket.gethostname()}.{os.getpid()}.{next(self._numbers)}.v2"
            )
            self._file = open(self.folder / name, "xb")  # noqa: SIM115 (kept open: close())
            version = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
            self._file.write(record(version.SerializeToString()))
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        self._file.write(record(event.SerializeToString()))
        self._file.flush()

    def close(self) -> None:
        """Closes the file (a later write starts a new one)."""
        if self._file is not None:
            self._file.close()
        self._file = None


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
    events = [event_pb2.Event(wall_time=now, file_version="brain.Event:2")]
    events += [event_pb2.Event(wall_time=now, step=0, summary=s) for s in summaries]
    path = folder / file_name(kind, now)
    earlier = [p for p in folder.glob(f"{PREFIX}*.regfw-{kind}") if p != path]
    atomic.write_bytes(path, b"".join(record(e.SerializeToString()) for e in events))
    for old in earlier:
        old.unlink(missing_ok=True)
    return path
