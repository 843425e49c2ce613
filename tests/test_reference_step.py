"""GAN steps on each backend equal pytorch/examples' DCGAN steps in plain PyTorch.

Same weights, same real batches, same z: after each training run (D on real + fake,
then G through the updated D, per step) every weight must match a hand-written
torch.nn reference of ``dcgan/main.py`` (Sigmoid + BCELoss, ConvTranspose2d/Conv2d
with padding 1, BatchNorm2d in training mode). This pins the step's wiring on all
three backends: which network each loss updates, detach/stop-gradient, BN modes,
loss signs. With Adam over several steps, both nets' first and second moments are
compared too: Adam's update is nearly gradient-scale invariant, its moments are not,
so a wrong gradient cannot hide behind a right sign; and the state carried between
steps is checked. A reference that updates G through the stale (pre-update) D must
fail the same comparison (the negative control).
"""

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nebula_keras3.models import DCGANDiscriminator, DCGANGenerator  # noqa: E402
from nebula_keras3.training.gan import GAN  # noqa: E402

SIZE, LATENT, NGF, NDF, BATCH = 32, 8, 4, 4, 6
STEPS = 3


def reference_nets(g, d):
    """torch.nn copies of our generator and discriminator (NCHW, torch weight layouts)."""
    def bn(layer):
        m = nn.BatchNorm2d(layer.gamma.shape[0], eps=1e-5, momentum=0.1)
        m.weight.data = torch.tensor(keras.ops.convert_to_numpy(layer.gamma))
        m.bias.data = torch.tensor(keras.ops.convert_to_numpy(layer.beta))
        return m

    g_layers = []
    for layer in g.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            k = keras.ops.convert_to_numpy(layer.kernel)  # [kh, kw, out, in]
            stride, pad = (1, 0) if layer.padding == "valid" else (2, 1)
            m = nn.ConvTranspose2d(k.shape[3], k.shape[2], 4, stride, pad, bias=False)
            m.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())  # [in, out, kh, kw]
            g_layers.append(m)
        elif isinstance(layer, keras.layers.BatchNormalization):
            g_layers.append(bn(layer))
        elif isinstance(layer, keras.layers.ReLU):
            g_layers.append(nn.ReLU())
    g_layers.append(nn.Tanh())

    d_layers = []
    for layer in d.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = keras.ops.convert_to_numpy(layer.kernel)  # [kh, kw, in, out]
            stride, pad = (1, 0) if layer.padding == "valid" else (2, 1)
            m = nn.Conv2d(k.shape[2], k.shape[3], 4, stride, pad, bias=False)
            m.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())  # [out, in, kh, kw]
            d_layers.append(m)
        elif isinstance(layer, keras.layers.BatchNormalization):
            d_layers.append(bn(layer))
        elif isinstance(layer, keras.layers.LeakyReLU):
            d_layers.append(nn.LeakyReLU(0.2))
    d_layers.append(nn.Sigmoid())
    return nn.Sequential(*g_layers).double(), nn.Sequential(*d_layers).double()


def reference_steps(netG, netD, reals, z, make_opt, *, stale_d=False):
    """dcgan/main.py's training loop body over ``reals`` (one batch per step), one Adam per net.

    ``stale_d=True`` is the negative control: G's loss goes through D's parameters from
    before this step's D update (D's BatchNorm statistics still update as usual).
    Returns ``(optG, optD, [(d_loss, g_loss) per step])``.
    """
    criterion = nn.BCELoss()
    optD, optG = make_opt(netD.parameters()), make_opt(netG.parameters())
    losses = []
    for real in reals:
        # D step: maximise log D(x) + log(1 - D(G(z))); only D's parameters move
        netD.zero_grad()
        output = netD(real).view(-1)
        errD_real = criterion(output, torch.ones_like(output))
        errD_real.backward()
        fake = netG(z)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, torch.zeros_like(output))
        errD_fake.backward()
        before = {k: v.detach().clone() for k, v in netD.named_parameters()}
        optD.step()
        # G step: maximise log D(G(z)) through the updated D; only G's parameters move
        netG.zero_grad()
        if stale_d:
            output = torch.func.functional_call(netD, before, (fake,)).view(-1)
        else:
            output = netD(fake).view(-1)
        errG = criterion(output, torch.ones_like(output))
        errG.backward()
        optG.step()
        losses.append((float((errD_real + errD_fake).detach()), float(errG.detach())))
    return optG, optD, losses


def keras_weights_as_torch(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            out.append(keras.ops.convert_to_numpy(layer.kernel).transpose(3, 2, 0, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            out += [keras.ops.convert_to_numpy(layer.gamma), keras.ops.convert_to_numpy(layer.beta)]
    return out


def _torch_layout(x):
    return x.transpose(3, 2, 0, 1) if x.ndim == 4 else x  # conv kernels [kh, kw, a, b] -> [b, a, kh, kw]


def keras_adam_moments_as_torch(model, optimizer):
    """``[(m, v)]`` of ``optimizer`` for ``model``'s weights, in ``keras_weights_as_torch`` order."""
    by_path = {v.path: v for v in optimizer.variables}
    out = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            weights = [layer.kernel]
        elif isinstance(layer, keras.layers.BatchNormalization):
            weights = [layer.gamma, layer.beta]
        else:
            continue
        for w in weights:
            key = f"{optimizer.name}/{w.path.replace('/', '_')}"
            m, v = (keras.ops.convert_to_numpy(by_path[f"{key}_{s}"]) for s in ("momentum", "velocity"))
            out.append((_torch_layout(m), _torch_layout(v)))
    return out


def train_keras(optimizer, *, steps, lr):
    """Train our GAN ``steps`` steps; return it, torch copies of its initial nets, the batches and z."""
    g = DCGANGenerator(SIZE, LATENT, NGF, seed=0)
    d = DCGANDiscriminator(SIZE, NDF, seed=1)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (steps * BATCH, SIZE, SIZE, 3)).astype("float32")
    z = rng.normal(size=(BATCH, LATENT)).astype("float32")
    nets = reference_nets(g, d)  # before training: the reference starts from the same weights

    if optimizer == "sgd":
        make = lambda name: keras.optimizers.SGD(lr, name=name)  # noqa: E731
    else:
        make = lambda name: keras.optimizers.Adam(lr, beta_1=0.5, epsilon=1e-8, name=name)  # noqa: E731
    gan = GAN(g, d, seed=0)
    gan.compile(d_optimizer=make("d_opt"), g_optimizer=make("g_opt"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GAN, "sample_latents", lambda self, n: keras.ops.convert_to_tensor(z))
        history = gan.fit(real, batch_size=BATCH, epochs=1, verbose=0, shuffle=False).history

    to_torch = lambda x: torch.tensor(x.transpose(0, 3, 1, 2).astype("float64"))  # noqa: E731
    reals = [to_torch(real[i * BATCH:(i + 1) * BATCH]) for i in range(steps)]
    z_torch = torch.tensor(z.astype("float64")).view(BATCH, LATENT, 1, 1)
    return gan, nets, reals, z_torch, history


def run_reference(optimizer, nets, reals, z, *, lr, stale_d=False):
    """The torch reference from (a copy of) the initial nets; ``(netG, netD, optG, optD), losses``."""
    import copy

    netG, netD = copy.deepcopy(nets)
    if optimizer == "sgd":
        make = lambda p: torch.optim.SGD(p, lr=lr)  # noqa: E731
    else:
        make = lambda p: torch.optim.Adam(p, lr=lr, betas=(0.5, 0.999), eps=1e-8)  # noqa: E731
    optG, optD, losses = reference_steps(netG, netD, reals, z, make, stale_d=stale_d)
    return (netG, netD, optG, optD), losses


def mismatches(gan, reference, *, weight_atol, moment_rtol=None) -> list[str]:
    """Every weight (and, with ``moment_rtol``, every Adam moment) that differs from the reference.

    Weights: absolute tolerance. Moments: relative to the largest entry of each tensor.
    """
    netG, netD, optG, optD = reference
    found = []
    for tag, net, model, opt_ref, opt in (("G", netG, gan.generator, optG, gan.g_optimizer),
                                          ("D", netD, gan.discriminator, optD, gan.d_optimizer)):
        params = list(net.parameters())
        ours = keras_weights_as_torch(model)
        assert len(params) == len(ours)
        for i, (a, p) in enumerate(zip(ours, params)):
            err = float(np.abs(a - p.detach().numpy()).max())
            if err > weight_atol:
                found.append(f"{tag} weight {i}: max diff {err:.3g} > {weight_atol:g}")
        if moment_rtol is None:
            continue
        for i, ((m, v), p) in enumerate(zip(keras_adam_moments_as_torch(model, opt), params)):
            state = opt_ref.state[p]
            for name, a, b in (("m", m, state["exp_avg"]), ("v", v, state["exp_avg_sq"])):
                b = b.numpy()
                scale = float(np.abs(b).max())
                err = float(np.abs(a - b).max())
                if err > moment_rtol * scale:
                    found.append(f"{tag} Adam {name} {i}: max diff {err:.3g} > {moment_rtol:g} x {scale:.3g}")
    return found


def test_one_sgd_step_matches_pytorch_reference():
    """SGD: exact gradients, so the weights agree to float32 round-off after a step."""
    gan, nets, reals, z, history = train_keras("sgd", steps=1, lr=0.05)
    reference, losses = run_reference("sgd", nets, reals, z, lr=0.05)
    assert history["d_loss"][0] == pytest.approx(losses[0][0], abs=1e-4)
    assert history["g_loss"][0] == pytest.approx(losses[0][1], abs=1e-4)
    assert mismatches(gan, reference, weight_atol=1e-6) == []
    # BatchNorm running means follow torch's momentum 0.1 (variances differ by design:
    # torch keeps the unbiased batch variance, Keras the biased one).
    netD = reference[1]
    ref_bn = [m for m in netD if isinstance(m, nn.BatchNorm2d)][0]
    ours_bn = [l for l in gan.discriminator.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours_bn.moving_mean), ref_bn.running_mean.numpy(), atol=1e-6
    )


# The recipe's Adam. Weights: within 10% of one step's size (Adam turns round-off in
# near-zero gradients into whole-step sign flips, so tighter is noise). Moments: within
# 1e-3 of each tensor's largest entry (measured: ~2e-5 here; a stale D gives ~0.5, a
# gradient 5% too large ~0.05).
ADAM_LR = 2e-4
ADAM_WEIGHT_ATOL = 0.1 * ADAM_LR
ADAM_MOMENT_RTOL = 1e-3


@pytest.fixture(scope="module")
def adam_run():
    """Our GAN after STEPS Adam steps (trained once for the two tests below)."""
    return train_keras("adam", steps=STEPS, lr=ADAM_LR)


def test_adam_steps_match_pytorch_reference(adam_run):
    """STEPS Adam steps of both nets: weights and both Adam moments agree with torch."""
    gan, nets, reals, z, _ = adam_run
    reference, _ = run_reference("adam", nets, reals, z, lr=ADAM_LR)
    assert gan.steps_done == STEPS
    assert mismatches(gan, reference, weight_atol=ADAM_WEIGHT_ATOL, moment_rtol=ADAM_MOMENT_RTOL) == []


def test_stale_discriminator_fails_the_comparison(adam_run):
    """Negative control: a reference whose G step goes through the pre-update D is told apart."""
    gan, nets, reals, z, _ = adam_run
    reference, _ = run_reference("adam", nets, reals, z, lr=ADAM_LR, stale_d=True)
    found = mismatches(gan, reference, weight_atol=ADAM_WEIGHT_ATOL, moment_rtol=ADAM_MOMENT_RTOL)
    assert any(f.startswith("G ") for f in found), found
