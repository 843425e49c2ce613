"""TensorBoard event files from any backend, with the standard library only.

TensorBoard reads ``events.out.tfevents.*`` files: TFRecord framing around
serialized ``tensorflow.Event`` protos. Both are small enough to write by hand, so
a run on JAX or PyTorch needs neither TensorFlow, nor ``tensorboard``, nor protobuf:

* a record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``
  (little-endian; ``masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`` mod 2**32);
* ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, ``Summary``), ``session_log`` (7, ``SessionLog``);
* ``Summary``: repeated ``value`` (1): ``tag`` (1, string), ``simple_value`` (2, float)
  or ``image`` (4): ``height`` (1), ``width`` (2), ``colorspace`` (3), ``encoded_image_string`` (4, PNG).

``TensorBoardLogger`` (a Keras callback) writes, in the run folder: per step
``step/<value>`` for each value the train step logs (d_loss, g_loss, d_real = D(x),
d_fake = D(G(z)), ...); per epoch ``epoch/<column>`` for every numeric column of the
epoch's ``epochs.csv`` row and the sample grid as image ``samples``.
``read_events`` parses the files back (CRCs checked), for tests and scripts;
``cut_events`` cuts a file back to a checkpoint's step (a resume's repair).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

from nebula_keras3 import tfrecord
from nebula_keras3.training.monitor import StepValues, diverged
from nebula_keras3.training.run_folder import WALL_CLOCK_COLUMNS

EVENTS_PREFIX = "events.out.tfevents."
SAMPLES_TAG = "samples"

# --- protobuf wire format: just what Event needs ----------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _field_double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _field_float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _event(step: int, **fields: bytes) -> bytes:
    """Serialized Event; ``fields``: file_version / summary / session_log payloads."""
    body = _field_double(1, time.time()) + _field_varint(2, int(step))
    numbers = {"file_version": 3, "summary": 5, "session_log": 7}
    for name, payload in fields.items():
        body += _field_bytes(numbers[name], payload)
    return body


class EventWriter:
    """Appends events to a new ``events.out.tfevents.<time>.<host>.<pid>`` file in ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"{EVENTS_PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{id(self)}"
        self.path = self.log_dir / name
        self._file = open(self.path, "ab")
        self._write(_event(0, file_version=b"brain.Event:2"))

    def _write(self, data: bytes) -> None:
        self._file.write(tfrecord.frame(data))

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One event holding a simple_value per tag."""
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _field_float(2, float(v)))
            for tag, v in values.items()
        )
        self._write(_event(step, summary=summary))

    def image(self, tag: str, png: bytes, height: int, width: int, step: int, channels: int = 3) -> None:
        """An encoded (PNG/JPEG) image; ``channels`` is TensorBoard's colorspace (3 = RGB)."""
        image = (
            _field_varint(1, height) + _field_varint(2, width) + _field_varint(3, channels)
            + _field_bytes(4, png)
        )
        self._write(_event(step, summary=_field_bytes(1, _field_bytes(1, tag.encode()) + _field_bytes(4, image))))

    def session_start(self, step: int) -> None:
        """SessionLog START: TensorBoard drops older files' events at or after ``step`` (a resume)."""
        self._write(_event(step, session_log=_field_varint(1, 1)))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# --- reading back -----------------------------------------------------------------------------


def _parse(data: bytes) -> dict[int, list]:
    """Protobuf message -> {field number: [values]} (varint/fixed as numbers, bytes raw)."""
    out, i = {}, 0

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            (value,), i = struct.unpack_from("<d", data, i), i + 8
        elif wire == 5:
            (value,), i = struct.unpack_from("<f", data, i), i + 4
        elif wire == 2:
            n = varint()
            value, i = data[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _decode(body: bytes) -> dict:
    fields = _parse(body)
    event = {"wall_time": fields[1][0], "step": fields.get(2, [0])[0], "scalars": {}, "images": {}}
    if 3 in fields:
        event["file_version"] = fields[3][0].decode()
    if 7 in fields:
        event["session_start"] = _parse(fields[7][0]).get(1, [0])[0] == 1
    for summary in fields.get(5, []):
        for value in _parse(summary).get(1, []):
            v = _parse(value)
            tag = v[1][0].decode()
            if 2 in v:
                event["scalars"][tag] = v[2][0]
            if 4 in v:
                img = _parse(v[4][0])
                event["images"][tag] = (img[1][0], img[2][0], img[4][0])
    return event


def read_events(path: str | os.PathLike) -> list[dict]:
    """Events of one file as dicts: ``step``, ``wall_time``, and ``scalars`` {tag: value},
    ``images`` {tag: (height, width, png bytes)}, ``file_version`` or ``session_start`` when present.

    Raises ValueError on a bad CRC or a truncated record.
    """
    return [_decode(body) for body in tfrecord.read_records(Path(path).read_bytes(), str(path))]


def cut_events(path: str | os.PathLike, max_step: int) -> str | None:
    """Keep the complete events of ``path`` at steps <= ``max_step`` (a resume from that step).

    A record cut short by a kill, and everything a run logged after its checkpoint, go.
    The file is rewritten atomically, or removed when no summary is left; returns what
    changed (None: nothing).
    """
    from nebula_keras3.artifacts import write_bytes_atomic

    path = Path(path)
    data = path.read_bytes()
    records, problem = tfrecord.scan_records(data, str(path))
    kept = [(start, end, body) for start, end, body in records if _decode(body)["step"] <= max_step]
    if not any(5 in _parse(body) for _, _, body in kept):  # e.g. a run killed before its first epoch ended
        path.unlink()
        return "removed (no event at or before the checkpoint's step)"
    if not problem and len(kept) == len(records):
        return None
    write_bytes_atomic(b"".join(data[start:end] for start, end, _ in kept), path)
    return f"cut back to step {max_step}" + (" (a torn last record)" if problem else "")


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(log_dir).glob(EVENTS_PREFIX + "*"))


# --- the training callback ------------------------------------------------------------------


class TensorBoardLogger(StepValues):
    """Writes a run's TensorBoard events into ``log_dir`` (the run folder).

    Args:
        log_dir: folder for the event file (``tensorboard --logdir runs/`` finds it).
        extra_columns: epoch-logs keys logged per epoch besides the wall-clock columns and
            the step values' epoch means (held-out figures; skipped in epochs without them).
        grid_path: ``epoch -> path`` of the epoch's sample grid PNG (``run_folder.sample_grid_path``
            bound to the run folder); logged as image ``samples``. None: no images.

    Per step: ``step/<name>`` for every value the train step logs (losses, D(x), D(G(z))).
    Per epoch: ``epoch/<column>`` for every numeric ``epochs.csv`` column except ``epoch``
    and ``step``, from the epoch's logs (list it after ``EpochSummary`` and the grid writer).
    Events are written and flushed at each epoch's end, none for a diverged epoch; a
    resumed run starts a new file with a SessionLog START at its first step.
    """

    def __init__(self, log_dir, extra_columns=(), grid_path=None):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.extra_columns = tuple(extra_columns)
        self.grid_path = grid_path
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = EventWriter(self.log_dir)
        if self.model.steps_done:  # a resume: TensorBoard drops older files' events from this step on
            self.writer.session_start(self.model.steps_done + 1)

    def on_epoch_done(self, epoch, logs):
        if diverged(logs) or not self.steps:
            return
        for step, values in self.steps:
            self.writer.scalars({f"step/{k}": v for k, v in values.items()}, step)
        step = self.model.steps_done
        values = {}
        for key in (*WALL_CLOCK_COLUMNS, *self.steps[0][1], *self.extra_columns):
            try:
                values[f"epoch/{key}"] = float(logs[key])
            except (KeyError, TypeError, ValueError):
                continue  # not logged this epoch (an unscored epoch), or not a number
        self.writer.scalars(values, step)
        grid = self.grid_path(epoch) if self.grid_path else None
        if grid is not None and grid.is_file():
            png = grid.read_bytes()
            width, height = struct.unpack(">II", png[16:24])  # PNG IHDR
            self.writer.image(SAMPLES_TAG, png, height, width, step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
