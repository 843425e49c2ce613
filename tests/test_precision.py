"""--mixed-precision bf16 / fp16: a training step runs, losses finite, variables and outputs float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nebula_keras3.training.precision import dtype_policy, float32_copy
from nebula_keras3.training.trainer import build_gan

from conftest import tiny_config


@pytest.fixture(autouse=True)
def _global_policy_untouched():
    before = keras.config.dtype_policy().name
    yield
    assert keras.config.dtype_policy().name == before == "float32"


@pytest.mark.parametrize("mode, compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_steps(mode, compute):
    gan = build_gan(tiny_config(mixed_precision=mode, batch_size=4))
    conv = gan.generator.get_layer("up0_convt")
    assert conv.compute_dtype == compute and conv.variable_dtype == "float32"
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in gan.generator.trainable_variables]
    x = np.random.default_rng(0).uniform(-1, 1, (24, 32, 32, 3)).astype("float32")
    history = gan.fit(x, batch_size=4, epochs=1, verbose=0, shuffle=False)  # 6 steps
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert np.isfinite(history.history[key][-1]), key
    assert gan.steps_done == 6
    assert {v.dtype for v in gan.variables} <= {"float32", "int64", "uint32", "int32"}
    assert all(v.dtype == "float32" for v in gan.trainable_variables)
    images = gan.generator(np.zeros((2, 16), "float32"), training=False)
    assert keras.backend.standardize_dtype(images.dtype) == "float32"
    logits = gan.discriminator(x[:2], training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    after = [keras.ops.convert_to_numpy(v) for v in gan.generator.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # G was updated
    if mode == "fp16":  # Keras' dynamic scale starts at 2**15: overflowing steps are skipped, halving it
        for opt in (gan.d_optimizer, gan.g_optimizer):
            assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
            applied = int(keras.ops.convert_to_numpy(opt.inner_optimizer.iterations))
            assert 1 <= applied <= 6
            assert float(keras.ops.convert_to_numpy(opt.dynamic_scale)) == 32768.0 * 0.5 ** (6 - applied)
    twin = float32_copy(gan.generator)
    assert twin.get_layer("up0_convt").compute_dtype == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(twin(np.zeros((2, 16), "float32"))),
        keras.ops.convert_to_numpy(images), atol=0.05)


def test_fp16_skips_a_step_with_inf_gradients_and_halves_the_scale():
    """Loss scaling really works: a 1e30 loss scale overflows fp16, the step is skipped."""
    gan = build_gan(tiny_config(mixed_precision="fp16", batch_size=4))
    for opt in (gan.d_optimizer, gan.g_optimizer):
        opt.dynamic_scale.assign(1e30)
    weights = [np.array(keras.ops.convert_to_numpy(v)) for v in gan.trainable_variables]
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    gan.fit(x, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for opt in (gan.d_optimizer, gan.g_optimizer):
        assert float(keras.ops.convert_to_numpy(opt.dynamic_scale)) == pytest.approx(5e29)
    for w, v in zip(weights, gan.trainable_variables):
        np.testing.assert_array_equal(w, keras.ops.convert_to_numpy(v))


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="mixed precision must be one of none, bf16, fp16, auto, got 'fp8'"):
        tiny_config(mixed_precision="fp8").validate()
    with pytest.raises(ValueError, match="got 'fp8'"), dtype_policy("fp8"):
        pass


@pytest.mark.backend_independent
def test_auto_is_bf16_only_where_it_was_measured_to_pay(tmp_path, monkeypatch):
    from nebula_keras3.training import precision

    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert precision.cpu_has_bf16(str(with_bf16)) and not precision.cpu_has_bf16(str(without))
    assert not precision.cpu_has_bf16(str(tmp_path / "missing"))
    monkeypatch.setattr(precision, "gpu_present", lambda backend: False)
    for has_bf16, backend, expected in [(True, "tensorflow", "bf16"), (True, "torch", "bf16"),
                                        (True, "jax", "none"), (False, "tensorflow", "none")]:
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda has=has_bf16: has)
        assert precision.resolve("auto", backend) == expected, (has_bf16, backend)
    monkeypatch.setattr(precision, "gpu_present", lambda backend: True)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve("auto", "tensorflow") == "none"  # not measured on GPUs
    assert precision.resolve("fp16", "jax") == "fp16" and precision.resolve("none", "torch") == "none"


@pytest.mark.backend_independent  # config bookkeeping (resolve is patched)
def test_a_run_records_what_auto_resolved_to(tmp_path, monkeypatch):
    import json

    from nebula_keras3.training import precision
    from nebula_keras3.training.config import TrainConfig
    from nebula_keras3.training.trainer import train

    monkeypatch.setattr(precision, "resolve", lambda mode, backend=None: "bf16" if mode == "auto" else mode)
    config = TrainConfig.from_preset("tiny", mixed_precision="auto", steps_per_epoch=1, num_procedural=8,
                                     sample_count=4)
    train(config, tmp_path / "run", progress=False, echo=lambda *a: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mixed_precision"] == "bf16"
