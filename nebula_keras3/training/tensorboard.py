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
``step/d_loss``, ``step/g_loss``, ``step/d_real`` (D(x)) and ``step/d_fake`` (D(G(z)));
per epoch ``epoch/<column>`` for every numeric column of the epoch row (img/s, means,
and any metric columns other callbacks add) and the sample grid as image ``samples``.
``read_events`` parses the files back (CRCs checked), for tests and scripts.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import keras
from keras import ops

from nebula_keras3 import tfrecord

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


def read_events(path: str | os.PathLike) -> list[dict]:
    """Events of one file as dicts: ``step``, ``wall_time``, and ``scalars`` {tag: value},
    ``images`` {tag: (height, width, png bytes)}, ``file_version`` or ``session_start`` when present.

    Raises ValueError on a bad CRC or a truncated record.
    """
    events = []
    for body in tfrecord.read_records(Path(path).read_bytes(), str(path)):
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
        events.append(event)
    return events


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(log_dir).glob(EVENTS_PREFIX + "*"))


# --- the training callback ------------------------------------------------------------------


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes a run's TensorBoard events into ``log_dir`` (the run folder).

    Args:
        log_dir: folder for the event file (``tensorboard --logdir runs/`` finds it).
        epoch_rows: the list the training monitor appends one dict per finished epoch to
            (numbers, or strings parsed as numbers); read at each epoch's end, so place
            this callback after every callback that adds columns to the row.
        grid_path: ``epoch -> path`` of the epoch's sample grid PNG (``monitor.sample_grid_path``
            bound to the run folder); logged as image ``samples``. None: no images.

    Per step: ``step/<name>`` for every value the train step logs (losses, D(x), D(G(z))).
    Per epoch: ``epoch/<column>`` for every numeric column except ``epoch`` and ``step``.
    """

    def __init__(self, log_dir, epoch_rows, grid_path=None):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.epoch_rows = epoch_rows
        self.grid_path = grid_path
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = EventWriter(self.log_dir)
        if self.model.steps_done:  # a resume: hide events of epochs that are redone
            self.writer.session_start(self.model.steps_done)

    def on_epoch_begin(self, epoch, logs=None):
        self._step0 = self.model.steps_done

    def on_train_batch_end(self, batch, logs=None):
        values = {f"step/{k}": float(ops.convert_to_numpy(v)) for k, v in (logs or {}).items()}
        if values:
            self.writer.scalars(values, self._step0 + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        row = self.epoch_rows[-1] if self.epoch_rows else None
        if row is None or int(row["epoch"]) != done:  # the epoch wrote no row (diverged)
            return
        step = int(row["step"])
        values = {}
        for key, value in row.items():
            if key in ("epoch", "step"):
                continue
            try:
                values[f"epoch/{key}"] = float(value)
            except (TypeError, ValueError):
                continue  # a non-numeric column (a path, a note)
        self.writer.scalars(values, step)
        grid = self.grid_path(done) if self.grid_path else None
        if grid is not None and grid.is_file():
            png = grid.read_bytes()
            width, height = struct.unpack(">II", png[16:24])  # PNG IHDR
            self.writer.image(SAMPLES_TAG, png, height, width, step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
