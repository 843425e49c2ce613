"""Metrics: SWD against an independent ProGAN transcription, FID/KID/PRDC, InceptionV3 loading,
and `nebula evaluate`'s inputs and errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_generator_run

from nebula_keras3.cli import main
from nebula_keras3.data import procedural_nebulae
from nebula_keras3.metrics.evaluate import EvaluationError, evaluate_images
from nebula_keras3.metrics.features import RandomCNNFeatures, frechet_distance, kernel_distance, prdc
from nebula_keras3.metrics.swd import sliced_wasserstein_distance


def run_cli(*args):
    result = CliRunner().invoke(main, ["evaluate", *map(str, args)])
    return result.exit_code, result.output


def blurred_and_tinted(images):
    """A visible distortion: 3x3 box blur and +20 on the red channel."""
    x = images.astype(np.float32)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    x = sum(p[:, dy : dy + x.shape[1], dx : dx + x.shape[2]] for dy in range(3) for dx in range(3)) / 9
    x[..., 0] += 20
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def tinted(images, value):
    x = images.astype(np.int16)
    x[..., 0] += value
    return np.clip(x, 0, 255).astype(np.uint8)


# --- SWD ------------------------------------------------------------------------------------


def progan_swd_reference(a_nhwc, b_nhwc, seed):
    """ProGAN's metrics/sliced_wasserstein.py written out plainly: scipy filtering, loops, RandomState."""
    ndimage = pytest.importorskip("scipy.ndimage")
    gauss = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6],
                        [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0
    rs = np.random.RandomState(seed)

    def pyramid(minibatch, levels):  # NCHW
        pyr = [np.float32(minibatch)]
        for _ in range(1, levels):
            down = ndimage.convolve(pyr[-1], gauss[None, None], mode="mirror")[:, :, ::2, ::2]
            pyr.append(down)
            up = np.zeros(pyr[-2].shape, np.float32)
            up[:, :, ::2, ::2] = down
            pyr[-2] = pyr[-2] - ndimage.convolve(up, gauss[None, None] * 4.0, mode="mirror")
        return pyr

    def descriptors(level):
        out = []
        for i in range(level.shape[0]):
            for _ in range(128):
                y = rs.randint(3, level.shape[2] - 3)
                x = rs.randint(3, level.shape[3] - 3)
                out.append(level[i, :, y - 3 : y + 4, x - 3 : x + 4])
        d = np.array(out)
        d -= d.mean(axis=(0, 2, 3), keepdims=True)
        d /= d.std(axis=(0, 2, 3), keepdims=True)
        return d.reshape(len(d), -1)

    resolutions, s = [], a_nhwc.shape[1]
    while s >= 16:
        resolutions.append(s)
        s //= 2
    pa = pyramid(a_nhwc.transpose(0, 3, 1, 2), len(resolutions))
    pb = pyramid(b_nhwc.transpose(0, 3, 1, 2), len(resolutions))
    per_level = []
    for la, lb in zip(pa, pb):
        da, db = descriptors(la), descriptors(lb)
        repeats = []
        for _ in range(4):
            dirs = rs.randn(da.shape[1], 128)
            dirs /= np.sqrt(np.sum(dirs**2, axis=0, keepdims=True))
            dirs = dirs.astype(np.float32)
            repeats.append(np.mean(np.abs(np.sort(da @ dirs, axis=0) - np.sort(db @ dirs, axis=0))))
        per_level.append(np.mean(repeats) * 1e3)
    return dict(zip(resolutions, per_level))


@pytest.mark.backend_independent
def test_evaluate_swd_matches_a_plain_progan_transcription(tmp_path):
    images = procedural_nebulae(96, 64, seed=3)
    real, fake = images[:48], blurred_and_tinted(images[48:])
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", fake)
    code, out = run_cli("--data", tmp_path / "real.npy", "--images", tmp_path / "fake.npy", "-n", 48,
                        "--metrics", "swd", "--json", tmp_path / "s.json")
    assert code == 0, out
    ours = json.loads((tmp_path / "s.json").read_text())
    refs = [progan_swd_reference(real, fake, seed) for seed in (0, 1)]
    ref = {res: np.mean([r[res] for r in refs]) for res in refs[0]}
    assert sorted(ref) == [16, 32, 64]
    # Random neighbourhoods and directions: about +-5% per level between seeds here.
    for res, value in ref.items():
        assert ours[f"swd_{res}"] == pytest.approx(value, rel=0.15), (res, ours, ref)
    assert ours["swd"] == pytest.approx(np.mean(list(ref.values())), rel=0.08)


@pytest.mark.backend_independent
def test_swd_is_zero_for_a_set_against_itself_and_grows_with_distortion():
    images = procedural_nebulae(64, 32, seed=1)
    same = sliced_wasserstein_distance(images, images, seed=0)
    assert same["swd"] == 0.0
    other = procedural_nebulae(64, 32, seed=2)  # same distribution, other images
    baseline = sliced_wasserstein_distance(images, other, seed=0)
    # Blur removes fine detail: the finest Laplacian level moves far more than sampling noise.
    blurred = sliced_wasserstein_distance(images, blurred_and_tinted(images), seed=0)
    assert blurred["swd_32"] > 2 * baseline["swd_32"] > 0
    # A colour shift is mostly normalised away per channel, but what is left grows with it.
    tint = [sliced_wasserstein_distance(images, tinted(images, v), seed=0)["swd"] for v in (10, 40)]
    assert 0 < tint[0] < tint[1]
    baseline = baseline["swd"]
    # Seeded: same figures again; another seed, other random draws.
    assert sliced_wasserstein_distance(images, other, seed=0)["swd"] == baseline
    assert sliced_wasserstein_distance(images, other, seed=1)["swd"] != baseline


@pytest.mark.backend_independent
def test_swd_of_a_collapsed_generator_is_a_large_number_not_nan():
    # A generator that outputs one flat colour (seen at epoch 1 of a run) has no spread at any
    # pyramid level: its score must be finite and far worse than a real set's, not NaN.
    images = procedural_nebulae(64, 32, seed=1)
    flat = np.full_like(images, 40)
    collapsed = sliced_wasserstein_distance(images, flat, seed=0)
    assert all(np.isfinite(v) for v in collapsed.values()), collapsed
    other = sliced_wasserstein_distance(images, procedural_nebulae(64, 32, seed=2), seed=0)
    assert collapsed["swd"] > 3 * other["swd"]


# --- feature metrics ---------------------------------------------------------------------------


@pytest.mark.backend_independent
def test_fid_and_kid_on_gaussian_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    b = rng.normal(size=(400, 16))  # same distribution
    c = rng.normal(0.5, 1.5, size=(400, 16))  # shifted and wider
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Exact FID of N(0, I) vs N(0.5, 1.5^2 I) in 16-D: 16 * (0.25 + (1.5 - 1)^2) = 8
    assert frechet_distance(a, c) == pytest.approx(8.0, rel=0.15)
    assert frechet_distance(a, b) < 0.1 * frechet_distance(a, c)
    kid_same, _ = kernel_distance(a, b, subset_size=200, subsets=20)
    kid_diff, _ = kernel_distance(a, c, subset_size=200, subsets=20)
    assert abs(kid_same) < 0.05 * kid_diff
    assert kid_diff > 0


@pytest.mark.backend_independent
def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 3)), rng.normal(0.3, 1.0, size=(7, 3))

    def k(x, y):
        return (x @ y / 3 + 1) ** 3

    m = 7
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kernel_distance(a, b)  # 7 < subset size: one subset, all rows
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == 0.0


@pytest.mark.backend_independent
def test_prdc_identical_and_disjoint_sets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 8))
    same = prdc(a, a.copy())
    assert same == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1.0, abs=0.05), "coverage": 1.0}
    far = prdc(a, rng.normal(size=(300, 8)) + 20.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # Half the fakes on the real manifold: precision about 1/2.
    half = prdc(a, np.concatenate([rng.normal(size=(150, 8)), rng.normal(size=(150, 8)) + 20.0]))
    assert 0.35 < half["precision"] < 0.65
    # Mode collapse: every fake near one real point. Faithful (precision ~1), not diverse.
    collapsed = prdc(a, a[:1] + rng.normal(scale=0.01, size=(300, 8)))
    assert collapsed["precision"] > 0.9
    assert collapsed["recall"] < 0.1 and collapsed["coverage"] < 0.1
    # Fakes spread far wider than the reals: their big k-NN balls hold every real (recall ~1),
    # but few fakes land in the reals' small balls (low precision and coverage).
    spread = prdc(a * 0.1, rng.normal(size=(300, 8)) * 3.0)
    assert spread["recall"] > 0.9
    assert spread["precision"] < 0.1 and spread["coverage"] < 0.3


@pytest.mark.backend_independent
def test_prdc_follows_the_definitions_of_naeem_et_al():
    rng = np.random.default_rng(3)
    real, fake, k = rng.normal(size=(20, 2)), rng.normal(0.5, 1.2, size=(25, 2)), 3

    def radius(points, i):  # distance to the k-th nearest other point
        return sorted(np.linalg.norm(points - points[i], axis=1))[k]

    r_real = [radius(real, i) for i in range(20)]
    r_fake = [radius(fake, j) for j in range(25)]
    d = [[np.linalg.norm(real[i] - fake[j]) for j in range(25)] for i in range(20)]
    expected = {
        "precision": np.mean([any(d[i][j] < r_real[i] for i in range(20)) for j in range(25)]),
        "recall": np.mean([any(d[i][j] < r_fake[j] for j in range(25)) for i in range(20)]),
        "density": np.mean([sum(d[i][j] < r_real[i] for i in range(20)) for j in range(25)]) / k,
        "coverage": np.mean([min(d[i]) < r_real[i] for i in range(20)]),
    }
    assert prdc(real, fake, k=k) == pytest.approx(expected)


@pytest.mark.backend_independent
def test_random_cnn_features_are_fixed_and_see_distortions():
    images = procedural_nebulae(40, 32, seed=4)
    f1 = RandomCNNFeatures()(images)
    f2 = RandomCNNFeatures()(images)  # a fresh instance: same weights from the fixed seed
    assert f1.shape == (40, 960)
    np.testing.assert_array_equal(f1, f2)
    assert np.std(f1, axis=0).mean() > 0  # not constant
    figures = evaluate_images(images, blurred_and_tinted(images), metrics=("fid", "kid", "prdc"))
    itself = evaluate_images(images, images, metrics=("fid", "prdc"))
    assert itself["fid_randcnn"] == pytest.approx(0.0, abs=1e-6)
    assert itself["precision"] == itself["recall"] == itself["coverage"] == 1.0
    assert figures["fid_randcnn"] > 1.0
    assert figures["kid_randcnn"] > 0


# --- InceptionV3 from a user's weights file -----------------------------------------------------


@pytest.mark.backend_independent
def test_inception_weights_file_loads_and_bad_files_are_clear_errors(tmp_path, monkeypatch):
    import keras

    from nebula_keras3.metrics import inception

    # An "InceptionV3 weights file" made here: an untrained model's weights (nothing downloaded).
    # 75 px (InceptionV3's minimum) keeps the two model builds of this test cheap.
    donor = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                           input_shape=(75, 75, 3))
    donor.save_weights(tmp_path / "inception.weights.h5")
    features = inception.InceptionFeatures(tmp_path / "inception.weights.h5", image_size=75)
    images = procedural_nebulae(6, 32, seed=0)
    fake = blurred_and_tinted(images)
    # The donor's weights, not a fresh random init, produce the features.
    def donor_features(x):
        x = keras.ops.image.resize(x.astype("float32"), (75, 75), interpolation="bilinear")
        return keras.ops.convert_to_numpy(donor(keras.applications.inception_v3.preprocess_input(x)))
    got_real = features(images)
    assert got_real.shape == (6, 2048)
    np.testing.assert_allclose(got_real, donor_features(images), rtol=1e-4, atol=1e-5)
    # evaluate_images feeds both sides through it (the instance built above stands in for a rebuild).
    monkeypatch.setattr(inception, "InceptionFeatures", lambda path, image_size: features)
    figures = evaluate_images(images, fake, metrics=("fid", "kid"), inception_weights=tmp_path / "inception.weights.h5")
    assert figures["fid_inception"] == pytest.approx(frechet_distance(got_real, donor_features(fake)), rel=1e-3)
    assert figures["kid_inception"] != 0
    # Weights of another architecture, and a file that is not HDF5 at all: one-line errors.
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    small.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(inception.InceptionWeightsError, match="does not hold InceptionV3 weights"):
        features.load_weights(tmp_path / "other.weights.h5")
    (tmp_path / "junk.weights.h5").write_bytes(b"junk")
    with pytest.raises(inception.InceptionWeightsError, match="does not hold InceptionV3 weights"):
        features.load_weights(tmp_path / "junk.weights.h5")


@pytest.mark.backend_independent
def test_evaluate_missing_inception_weights_is_one_line(tmp_path):
    np.save(tmp_path / "a.npy", procedural_nebulae(8, 32, seed=0))
    code, out = run_cli("--data", tmp_path / "a.npy", "--images", tmp_path / "a.npy", "-n", 8,
                        "--inception-weights", tmp_path / "nope.h5")
    assert code == 1
    assert out.strip() == f"Error: InceptionV3 weights file {tmp_path / 'nope.h5'} does not exist"


# --- nebula evaluate: sources and bad input ------------------------------------------------------


# Sampling itself is tested per backend in test_sampling.py; this checks evaluate's plumbing.
@pytest.mark.backend_independent
def test_evaluate_a_model_against_a_folder_resized_like_training(tmp_path):
    from PIL import Image

    run = make_generator_run(tmp_path / "run", image_size=32)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, im in enumerate(procedural_nebulae(12, 64, seed=5)):
        Image.fromarray(im[:, 8:]).save(folder / f"{i}.png")  # 64x56: centre-cropped, resized to 32
    code, out = run_cli("--data", folder, "--model", run, "-n", 10, "--metrics", "swd,prdc",
                        "--json", tmp_path / "s.json")
    assert code == 0, out
    figures = json.loads((tmp_path / "s.json").read_text())
    assert figures["n"] == 10 and figures["image_size"] == 32
    assert set(figures) >= {"swd", "swd_32", "swd_16", "precision", "recall", "density", "coverage"}
    assert "fid_randcnn" not in figures
    assert "swd" in out and "coverage" in out  # the table


@pytest.mark.backend_independent
def test_evaluate_bad_inputs_are_one_line_errors(tmp_path):
    images = procedural_nebulae(10, 32, seed=0)
    np.save(tmp_path / "a.npy", images)
    np.save(tmp_path / "b64.npy", procedural_nebulae(10, 64, seed=0))
    np.save(tmp_path / "float.npy", images.astype(np.float32))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--data", tmp_path / "empty", "--images", tmp_path / "a.npy", "-n", 5], "no usable images in"),
        (["--data", tmp_path / "a.npy", "--images", tmp_path / "a.npy", "-n", 20], "holds 10 images, fewer than -n 20"),
        (["--data", tmp_path / "a.npy", "--images", tmp_path / "broken.npy", "-n", 5], "cannot read generated images"),
        (["--data", tmp_path / "a.npy", "--images", tmp_path / "float.npy", "-n", 5], "must hold uint8 images"),
        (["--data", tmp_path / "b64.npy", "--images", tmp_path / "a.npy", "-n", 5],
         "the generated images are 32 px but"),
        (["--data", tmp_path / "a.npy", "-n", 5], "give exactly one of --model"),
        (["--data", tmp_path / "missing", "--images", tmp_path / "a.npy", "-n", 5], "do not exist"),
        (["--data", tmp_path / "a.npy", "--images", tmp_path / "a.npy", "--metrics", "swd,is"], "choose from"),
    ]
    for args, message in cases:
        code, out = run_cli(*args)
        assert code != 0, (args, out)
        assert message in out, (args, out)
        assert sum(line.startswith("Error") for line in out.splitlines()) == 1, out  # one error line


@pytest.mark.backend_independent
def test_evaluate_model_size_must_match_npy_images(tmp_path):
    run = make_generator_run(tmp_path / "run", image_size=32)
    np.save(tmp_path / "real64.npy", procedural_nebulae(8, 64, seed=0))
    code, out = run_cli("--data", tmp_path / "real64.npy", "--model", run, "-n", 4, "--metrics", "swd")
    assert code == 1
    assert out.strip().startswith("Error: the generated images are 32 px but") and "64 px" in out
    with pytest.raises(EvaluationError, match="real and generated sets differ"):
        evaluate_images(procedural_nebulae(4, 32), procedural_nebulae(4, 64))


@pytest.mark.backend_independent
def test_resolution_swd_scores_upscaled_low_resolution_samples_on_the_full_size_pyramid():
    from PIL import Image

    from nebula_keras3.metrics.evaluate import resolution_swd

    real = procedural_nebulae(24, 64, seed=1)
    low = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.LANCZOS)) for im in real])
    upscaled = np.stack([np.asarray(Image.fromarray(im).resize((64, 64), Image.Resampling.LANCZOS)) for im in low])
    figures = resolution_swd(real, low, seed=3)
    assert sorted(figures) == ["swd", "swd_16", "swd_32", "swd_64"]
    assert figures == sliced_wasserstein_distance(real, upscaled, seed=3)  # LANCZOS to the real size first
    assert resolution_swd(real, real, seed=3)["swd_64"] == 0.0
    # the upscale lost the finest detail: its 64 px level is worse than its coarse ones
    assert figures["swd_64"] > 2 * figures["swd_16"]
    with pytest.raises(EvaluationError, match="power of two"):
        resolution_swd(real[:, :48, :48], low)
    # another upscaling filter, named; an unknown one is refused by name
    blocks = np.repeat(np.repeat(low, 2, axis=1), 2, axis=2)  # nearest x2: each pixel a 2x2 block
    assert resolution_swd(real, low, seed=3, resample="nearest") == sliced_wasserstein_distance(real, blocks, seed=3)
    with pytest.raises(EvaluationError, match="unknown resampling filter 'box'; choose one of lanczos"):
        resolution_swd(real, low, resample="box")
