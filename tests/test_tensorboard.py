"""TensorBoard event files written without TensorFlow: format, and what a run logs."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from nebula_keras3.tfrecord import crc32c
from nebula_keras3.training.run_folder import sample_grid_path
from nebula_keras3.training.tensorboard import EventWriter, event_files, read_events


def _png(w=5, h=3) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(w * h * 3, dtype=np.uint8).reshape(h, w, 3)).save(buf, "PNG")
    return buf.getvalue()


def _write_sample(log_dir):
    writer = EventWriter(log_dir)
    writer.session_start(7)
    writer.scalars({"step/d_loss": 1.25, "step/g_loss": -3.5e-3}, step=8)
    writer.image("samples", _png(), 3, 5, step=8)
    writer.close()
    return writer.path


@pytest.mark.backend_independent
def test_crc32c_and_round_trip(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    path = _write_sample(tmp_path)
    assert path.name.startswith("events.out.tfevents.") and event_files(tmp_path) == [path]
    first, start, scalars, image = read_events(path)
    assert first["file_version"] == "brain.Event:2"
    assert start["session_start"] and start["step"] == 7
    assert scalars["step"] == 8 and scalars["scalars"] == {"step/d_loss": 1.25, "step/g_loss": np.float32(-3.5e-3)}
    assert image["images"]["samples"] == (3, 5, _png())
    data = bytearray(path.read_bytes())
    data[-10] ^= 1  # one flipped bit in the last record
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_events(path)


@pytest.mark.backend_independent
def test_tensorflow_reads_the_events(tmp_path):
    """TensorFlow's own reader (CRC-checked) parses every record into Event protos."""
    tf = pytest.importorskip("tensorflow")
    path = _write_sample(tmp_path)
    events = list(tf.compat.v1.train.summary_iterator(str(path)))
    assert events[0].file_version == "brain.Event:2"
    assert events[1].session_log.status == events[1].session_log.START and events[1].step == 7
    values = {v.tag: v for v in events[2].summary.value}
    assert values["step/d_loss"].simple_value == 1.25 and events[2].step == 8
    img = events[3].summary.value[0]
    assert img.tag == "samples" and (img.image.height, img.image.width, img.image.colorspace) == (3, 5, 3)
    assert img.image.encoded_image_string == _png()


@pytest.mark.backend_independent  # events mirror the CSVs
def test_a_run_logs_step_and_epoch_scalars_and_the_grid(tiny_run):
    """The tiny run (1 epoch, 1 step, current backend) has events equal to its CSVs."""
    (path,) = event_files(tiny_run)
    events = read_events(path)
    with open(tiny_run / "losses.csv") as f:
        (loss_row,) = list(csv.DictReader(f))
    with open(tiny_run / "epochs.csv") as f:
        (epoch_row,) = list(csv.DictReader(f))
    step_events = [e for e in events if any(t.startswith("step/") for t in e["scalars"])]
    assert [e["step"] for e in step_events] == [1]
    logged = step_events[0]["scalars"]
    assert set(logged) == {"step/d_loss", "step/g_loss", "step/d_real", "step/d_fake"}
    for tag, value in logged.items():
        assert value == pytest.approx(float(loss_row[tag[5:]]), rel=1e-6, abs=1e-7)
    (epoch_event,) = [e for e in events if any(t.startswith("epoch/") for t in e["scalars"])]
    numeric = {k for k in epoch_row if k not in ("epoch", "step")}
    assert set(epoch_event["scalars"]) == {f"epoch/{k}" for k in numeric}
    assert "epoch/images_per_second" in epoch_event["scalars"]
    for k in numeric:
        assert epoch_event["scalars"][f"epoch/{k}"] == pytest.approx(float(epoch_row[k]), rel=1e-6)
    (image_event,) = [e for e in events if e["images"]]
    height, width, png = image_event["images"]["samples"]
    assert png == sample_grid_path(tiny_run, 1).read_bytes()
    assert Image.open(io.BytesIO(png)).size == (width, height)


@pytest.mark.backend_independent
def test_cut_events_keeps_complete_events_up_to_a_step(tmp_path):
    """A resume's repair: events after the checkpoint's step and a record torn by a kill go."""
    from nebula_keras3.training.tensorboard import cut_events

    writer = EventWriter(tmp_path)
    for step in (1, 2, 3):
        writer.scalars({"step/d_loss": float(step)}, step=step)
    writer.close()
    path = writer.path
    whole = path.read_bytes()
    path.write_bytes(whole + whole[-30:-5])  # a record cut short
    assert cut_events(path, 2) == "cut back to step 2 (a torn last record)"
    assert [e["scalars"] for e in read_events(path)[1:]] == [{"step/d_loss": 1.0}, {"step/d_loss": 2.0}]
    assert cut_events(path, 2) is None  # nothing more to cut
    assert cut_events(path, 0) == "removed (no event at or before the checkpoint's step)"
    assert not path.exists()
