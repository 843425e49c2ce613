"""load_image_folder: formats by content, mode conversion, cropping, skips, errors, cache."""

from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from nebula_keras3.data.decode import to_rgb
from nebula_keras3.data.folder import (
    DataError,
    SkippedImagesWarning,
    load_image_folder,
)

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]


def _rgb(w=48, h=48, seed=0) -> Image.Image:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB")


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def _load(folder, size=32, **kw):
    """Load without cache or progress, returning (result, list of warning messages)."""
    kw.setdefault("use_cache", False)
    kw.setdefault("progress", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_image_folder(folder, size, **kw)
    msgs = [str(w.message) for w in caught if issubclass(w.category, SkippedImagesWarning)]
    return result, msgs


def _by_name(result, rel):
    return result.images[result.files.index(rel)]


@pytest.fixture
def zoo(tmp_path) -> Path:
    """A folder of every supported format and mode, plus files that must be skipped."""
    d = tmp_path / "zoo"
    _save(_rgb(), d / "rgb.jpg", "JPEG", quality=95)
    _save(_rgb(seed=1), d / "png_inside.jpg", "PNG")  # extension lies
    _save(_rgb(seed=2), d / "sub" / "deeper" / "nested.webp", "WEBP")
    _save(_rgb(seed=3), d / "bitmap.bmp", "BMP")
    _save(_rgb(seed=4), d / "scan.tif", "TIFF")
    _save(Image.new("L", (40, 40), 200), d / "gray.png", "PNG")
    _save(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), d / "cmyk.jpg", "JPEG", quality=95)  # red ink
    _save(_rgb(seed=6).convert("P"), d / "palette.png", "PNG")
    _save(Image.new("LA", (40, 40), (255, 128)), d / "gray_alpha.png", "PNG")
    # RGBA: left half fully transparent red, right half opaque red.
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 32:, 3] = 255
    _save(Image.fromarray(rgba, "RGBA"), d / "rgba.png", "PNG")
    # P with transparency: index 0 (red) transparent, index 1 (green) opaque, top/bottom.
    p = Image.new("P", (64, 64), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(1, (0, 32, 64, 64))
    _save(p, d / "palette_transparent.png", "PNG", transparency=0)
    # 16-bit grayscale: top half 65535, bottom half 32896 (= 128 * 257).
    g16 = np.full((64, 64), 65535, np.uint16)
    g16[32:] = 32896
    _save(Image.fromarray(g16), d / "deep16.png", "PNG")
    # GIF: first frame red, second blue: the first must be used.
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    # ---- to be skipped
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("this is not an image\n")
    buf = io.BytesIO()
    _rgb(200, 200, seed=7).save(buf, format="JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _save(_rgb(1, 1), d / "dot.png", "PNG")
    _save(_rgb(400, 12), d / "sliver.png", "PNG")
    # ---- to be ignored
    _save(_rgb(), d / ".hidden.png", "PNG")
    _save(_rgb(), d / ".git" / "inside_hidden_dir.png", "PNG")
    return d


GOOD = {
    "anim.gif",
    "bitmap.bmp",
    "cmyk.jpg",
    "deep16.png",
    "gray.png",
    "gray_alpha.png",
    "palette.png",
    "palette_transparent.png",
    "png_inside.jpg",
    "rgb.jpg",
    "rgba.png",
    "scan.tif",
    "sub/deeper/nested.webp",
}
BAD = {
    "empty.jpg": "empty file",
    "notes.jpg": "not an image",
    "truncated.jpg": "truncated",
    "dot.png": "too small",
    "sliver.png": "too small",
}


def test_loads_every_format_by_content_and_skips_bad_files(zoo):
    result, msgs = _load(zoo)
    assert set(result.files) == GOOD
    assert result.files == sorted(result.files)
    assert result.images.shape == (len(GOOD), 32, 32, 3)
    assert result.images.dtype == np.uint8
    assert not result.from_cache
    reasons = dict(result.skipped)
    assert set(reasons) == set(BAD)
    for name, kind in BAD.items():
        assert reasons[name].startswith(kind), (name, reasons[name])
    # One summary warning naming the count and the first files with reasons.
    assert len(msgs) == 1
    assert msgs[0].startswith(f"skipped {len(BAD)} of {len(GOOD) + len(BAD)} files")
    assert "dot.png (too small: 1x1 px" in msgs[0]
    assert "empty.jpg (empty file)" in msgs[0]


def test_skip_summary_repeats_under_default_filters(zoo):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            load_image_folder(zoo, 32, use_cache=False, progress=False)
    assert [w.category for w in caught] == [SkippedImagesWarning] * 2
    assert caught[0].filename == __file__  # points at the caller, not the library


def test_mode_conversions(zoo):
    result, _ = _load(zoo)
    rgba = _by_name(result, "rgba.png").astype(int)
    assert rgba[:, :12].max() == 0  # transparent red -> black, not red
    assert (rgba[:, 20:, 0] == 255).all() and rgba[:, 20:, 1:].max() == 0
    pt = _by_name(result, "palette_transparent.png").astype(int)
    assert pt[:12].max() == 0  # transparent palette entry -> black
    assert (pt[20:, :, 1] == 255).all() and pt[20:, :, [0, 2]].max() == 0
    deep = _by_name(result, "deep16.png").astype(int)
    assert (deep[:12] == 255).all()  # 65535 -> 255, not clipped garbage
    assert (deep[20:] == 128).all()  # 32896 -> 128: scaled, not clipped to 255
    assert (_by_name(result, "gray.png") == 200).all()
    assert (_by_name(result, "gray_alpha.png") == 128).all()  # 255 at alpha 128/255
    gif = _by_name(result, "anim.gif").astype(int)
    assert (gif[..., 0] == 255).all() and gif[..., 2].max() == 0  # first frame (red)
    cmyk = _by_name(result, "cmyk.jpg").astype(int)  # C=0 M=Y=100% K=0 is red in RGB
    assert cmyk[..., 0].min() > 230 and cmyk[..., 1:].max() < 25, cmyk.reshape(-1, 3)[:3]


def test_to_rgb_int_and_float_modes():
    i32 = Image.fromarray(np.array([[0, 65535]], np.int32), "I")
    assert np.asarray(to_rgb(i32))[0, :, 0].tolist() == [0, 255]
    i8 = Image.fromarray(np.array([[0, 200]], np.int32), "I")
    assert np.asarray(to_rgb(i8))[0, :, 0].tolist() == [0, 200]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(to_rgb(f))[0, :, 1].tolist() == [0, 128, 255]
    f_wide = Image.fromarray(np.array([[-3.0, 7.0]], np.float32), "F")
    assert np.asarray(to_rgb(f_wide))[0, :, 2].tolist() == [0, 255]
    one_bit = Image.new("1", (2, 2), 1)
    assert np.asarray(to_rgb(one_bit)).min() == 255


@pytest.mark.parametrize("wide", [True, False])
def test_centre_crop(tmp_path, wide):
    h, w = (100, 300) if wide else (300, 100)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx // 2, yy // 2, np.full_like(xx, 7)], -1).astype(np.uint8)
    _save(Image.fromarray(a, "RGB"), tmp_path / "d" / "strip.png", "PNG")
    result, _ = _load(tmp_path / "d", 100)  # same side: the crop only, exactly
    out = result.images[0].astype(int)
    expect = a[:, 100:200] if wide else a[100:200]
    np.testing.assert_array_equal(out, expect)
    # Resized with an antialiasing filter: a uniform crop stays uniform.
    b = np.zeros((h, w, 3), np.uint8)
    b[(slice(None), slice(100, 200)) if wide else (slice(100, 200), slice(None))] = 180
    _save(Image.fromarray(b, "RGB"), tmp_path / "e" / "strip.png", "PNG")
    result, _ = _load(tmp_path / "e", 25)
    assert np.abs(result.images[0][2:-2, 2:-2].astype(int) - 180).max() <= 1


def test_min_side(tmp_path):
    _save(_rgb(40, 20), tmp_path / "d" / "a.png", "PNG")
    _save(_rgb(40, 40), tmp_path / "d" / "b.png", "PNG")
    result, msgs = _load(tmp_path / "d", 64)  # default min_side 32
    assert result.files == ["b.png"] and result.skipped[0][0] == "a.png"
    assert "shorter side < 32" in result.skipped[0][1] and len(msgs) == 1
    result, msgs = _load(tmp_path / "d", 64, min_side=10)
    assert result.files == ["a.png", "b.png"] and not result.skipped and not msgs


def test_truncated_jpeg_skipped_even_if_pillow_flag_was_on(zoo, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    result, _ = _load(zoo)
    assert dict(result.skipped)["truncated.jpg"].startswith("truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_pixel_limit_skips_with_a_reason_instead_of_pillows_bomb_check(tmp_path, monkeypatch):
    _save(_rgb(40, 40), tmp_path / "d" / "ok.png", "PNG")
    _save(_rgb(100, 100), tmp_path / "d" / "bomb.png", "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # Pillow's check would raise: ours decides
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        result, msgs = _load(tmp_path / "d", max_pixels=5000)
    assert result.files == ["ok.png"]
    assert dict(result.skipped)["bomb.png"] == "too large: 100x100 px = 10000 px > max_pixels 5000"
    assert len(msgs) == 1 and Image.MAX_IMAGE_PIXELS == 2000  # restored afterwards
    assert _load(tmp_path / "d", max_pixels=10000)[0].files == ["bomb.png", "ok.png"]


def test_large_jpeg_is_judged_and_decoded_at_draft_size(tmp_path, monkeypatch):
    """A JPEG over the limit loads when draft decoding brings it under; a PNG cannot."""
    big = _rgb(400, 400, seed=3).resize((800, 800))  # smooth enough for JPEG
    _save(big, tmp_path / "d" / "big.jpg", "JPEG", quality=95)
    _save(big, tmp_path / "e" / "big.png", "PNG")
    sizes = []
    real_load = Image.Image.load

    def spy(im):
        sizes.append(im.size)
        return real_load(im)

    monkeypatch.setattr(Image.Image, "load", spy)
    result, _ = _load(tmp_path / "d", 32, max_pixels=300 * 300)
    assert result.files == ["big.jpg"]
    assert sizes[0] == (100, 100)  # 1/8 scale: still >= 2 x 32 px, 64x fewer pixels
    reference = np.asarray(big.resize((32, 32), Image.Resampling.LANCZOS)).astype(int)
    assert np.abs(result.images[0].astype(int) - reference).mean() < 6  # same picture
    with pytest.raises(DataError, match=r"big.png \(too large: 800x800 px = 640000 px > max_pixels"):
        _load(tmp_path / "e", 32, max_pixels=300 * 300)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "F-nan", "RGBA", "LA"])
def test_deep_and_alpha_images_are_mapped_at_output_size(mode, monkeypatch):
    """Same picture as converting the full image first, but only S x S pixels go through numpy."""
    from nebula_keras3.data import decode

    rng = np.random.default_rng(0)
    smooth = np.asarray(_rgb(30, 20).resize((300, 200), Image.Resampling.BICUBIC))[..., 0].astype(float)
    if mode.startswith("I;16"):
        a = (smooth * 257).astype(np.uint16)
        im = Image.fromarray(a).convert("I").convert(mode) if mode != "I;16" else Image.fromarray(a)
    elif mode == "I":
        im = Image.fromarray((smooth * 1000 - 50_000).astype(np.int32), "I")  # stretched
    elif mode.startswith("F"):
        f = (smooth / 255).astype(np.float32)
        if mode == "F-nan":
            f[0, 0] = np.nan
        im = Image.fromarray(f, "F")
    else:
        rgba = np.dstack([_rgb(300, 200)] + [rng.integers(0, 256, (200, 300), dtype=np.uint8)])
        im = Image.fromarray(rgba, "RGBA").convert(mode)
    reference = decode._crop_resize(to_rgb(im), 32).astype(int)
    shapes = []
    real = decode._gray_array
    monkeypatch.setattr(decode, "_gray_array", lambda a: shapes.append(a.shape) or real(a))
    out = decode.square_rgb(im, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - reference).max() <= 2  # rounding of the 8-bit step moved
    if mode in decode._DEEP_MODES or mode == "F-nan":
        assert shapes == [(32, 32)]  # no full-size float64 copy
def test_sequential_and_threaded_decoding_agree(zoo):
    a, _ = _load(zoo, workers=1)
    b, _ = _load(zoo, workers=4)
    assert a.files == b.files and a.skipped == b.skipped
    np.testing.assert_array_equal(a.images, b.images)


def test_errors_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope", 32, use_cache=False)
    f = tmp_path / "file.png"
    _save(_rgb(), f, "PNG")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_image_folder(f, 32, use_cache=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataError, match="holds no files"):
        load_image_folder(tmp_path / "empty", 32, use_cache=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.jpg").write_text("hello")
    _save(_rgb(4, 4), bad / "c.png", "PNG")
    with pytest.raises(DataError) as info:
        load_image_folder(bad, 32, use_cache=False, progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "found 3 file(s), skipped all" in msg
    assert "1 empty file, 1 not an image, 1 too small" in msg
    assert "a.jpg (empty file)" in msg and "b.jpg (not an image)" in msg


def _cache_files(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.npy"))


def test_cache_hit_invalidation_and_corruption(zoo, tmp_path):
    cache = tmp_path / "cache"
    first, msgs1 = _load(zoo, cache_dir=cache, use_cache=True)
    assert not first.from_cache and len(_cache_files(cache)) == 1
    second, msgs2 = _load(zoo, cache_dir=cache, use_cache=True)
    assert second.from_cache
    np.testing.assert_array_equal(first.images, second.images)
    assert second.files == first.files and second.skipped == first.skipped
    assert msgs2 == msgs1  # the skip summary is re-emitted from the cache

    # Another image size is another entry.
    other, _ = _load(zoo, 16, cache_dir=cache, use_cache=True)
    assert not other.from_cache and other.images.shape[1:] == (16, 16, 3)

    # A changed file invalidates the entry.
    _save(_rgb(seed=99), zoo / "rgb.jpg", "JPEG", quality=95)
    st = os.stat(zoo / "rgb.jpg")
    os.utime(zoo / "rgb.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed, _ = _load(zoo, cache_dir=cache, use_cache=True)
    assert not changed.from_cache
    assert not np.array_equal(_by_name(changed, "rgb.jpg"), _by_name(first, "rgb.jpg"))
    assert _load(zoo, cache_dir=cache, use_cache=True)[0].from_cache

    # A corrupt cache file is ignored and rebuilt. (Replaced, not truncated in place:
    # results above still memory-map the old files, as a running training would.)
    for npy in _cache_files(cache):
        npy.unlink()
        npy.write_bytes(b"\x93NUMPY garbage")
    rebuilt, _ = _load(zoo, cache_dir=cache, use_cache=True)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(rebuilt.images, changed.images)
    for meta in cache.rglob("*.json"):
        meta.write_text("{not json")
    assert not _load(zoo, cache_dir=cache, use_cache=True)[0].from_cache
    assert _load(zoo, cache_dir=cache, use_cache=True)[0].from_cache
    assert not list(cache.rglob(".*tmp*"))  # atomic writes leave no temp files


def test_use_cache_false_writes_nothing_and_env_default(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("NEBULA_CACHE_DIR", str(tmp_path / "envcache"))
    _load(zoo, use_cache=False)
    assert not (tmp_path / "envcache").exists()
    _load(zoo, use_cache=True)
    assert len(_cache_files(tmp_path / "envcache")) == 1


def _real_data_dir() -> Path | None:
    env = os.environ.get("NEBULA_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "nebula"
    return path if path.is_dir() else None


@pytest.mark.realdata
def test_real_nebula_folder(tmp_path):
    folder = _real_data_dir()
    if folder is None:
        pytest.skip(
            "real nebula images not found: set NEBULA_DATA or put them in ../shared/data/nebula"
        )
    t0 = time.perf_counter()
    cold, msgs = _load(folder, 64, cache_dir=tmp_path / "cache", use_cache=True)
    t1 = time.perf_counter()
    warm, _ = _load(folder, 64, cache_dir=tmp_path / "cache", use_cache=True)
    t2 = time.perf_counter()
    print(
        f"\nreal data: {len(cold.images)} loaded, {len(cold.skipped)} skipped "
        f"{cold.skipped[:5]}; cold {t1 - t0:.2f} s, cached {t2 - t1:.3f} s"
    )
    assert len(cold.images) > 1400
    assert cold.images.shape[1:] == (64, 64, 3) and cold.images.dtype == np.uint8
    assert len(msgs) == (1 if cold.skipped else 0)
    assert warm.from_cache and not cold.from_cache
    np.testing.assert_array_equal(warm.images, cold.images)
    assert 20 < cold.images.mean() < 150  # photos, not black or washed-out frames


# --- data larger than RAM: the cache is streamed to disk and memory-mapped ------------------


def test_cache_is_a_memmap_streamed_in_chunks_equal_to_the_in_memory_path(zoo, tmp_path, monkeypatch):
    from nebula_keras3.data import cache

    monkeypatch.setattr(cache, "_CHUNK", 3)  # 13 images: four full chunks and a partial one
    memory, _ = _load(zoo, use_cache=False)
    assert not isinstance(memory.images, np.memmap)
    for attempt in ("written", "read back"):
        cached, _ = _load(zoo, cache_dir=tmp_path / "cache", use_cache=True)
        assert cached.from_cache == (attempt == "read back")
        assert isinstance(cached.images, np.memmap) and not cached.images.flags.writeable
        assert cached.files == memory.files and cached.skipped == memory.skipped
        np.testing.assert_array_equal(cached.images, memory.images)


def test_killed_cache_write_leaves_no_half_cache(zoo, tmp_path):
    """SIGKILL in the middle of decoding: no cache entry appears; the next load rebuilds it."""
    import subprocess
    import sys

    cache = tmp_path / "cache"
    script = f"""
import os, signal
from nebula_keras3.data import cache, decode, folder
cache._CHUNK = 2
real, calls = decode.decode_one, []
def dying(*args):
    calls.append(1)
    if len(calls) == 7:  # three chunks already written to the temp file
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
decode.decode_one = dying
folder.load_image_folder({str(zoo)!r}, 32, cache_dir={str(cache)!r}, workers=1, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    leftovers = list(cache.rglob("*"))
    assert any(p.name.startswith(".images-") for p in leftovers)  # the killed temp file
    assert not _cache_files(cache) and not list(cache.rglob("images-*.json"))
    rebuilt, _ = _load(zoo, cache_dir=cache, use_cache=True)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(rebuilt.images, _load(zoo)[0].images)
