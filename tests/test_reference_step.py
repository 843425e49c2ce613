"""One GAN step on each backend equals pytorch/examples' DCGAN step in plain PyTorch.

Same weights, same real batch, same z: after one step (D on real + fake, then G
through the updated D) every weight must match a hand-written torch.nn reference
of ``dcgan/main.py`` (Sigmoid + BCELoss, ConvTranspose2d/Conv2d with padding 1,
BatchNorm2d in training mode). This pins the step's wiring on all three backends:
which network each loss updates, detach/stop-gradient, BN modes, loss signs.
"""

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nebula_keras3.models import DCGANDiscriminator, DCGANGenerator  # noqa: E402
from nebula_keras3.training.gan import GAN  # noqa: E402

SIZE, LATENT, NGF, NDF, BATCH = 32, 8, 4, 4, 6


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


def reference_step(netG, netD, real, z, make_opt):
    """dcgan/main.py's training loop body, verbatim in spirit."""
    criterion = nn.BCELoss()
    optD, optG = make_opt(netD.parameters()), make_opt(netG.parameters())
    netD.zero_grad()
    output = netD(real).view(-1)
    errD_real = criterion(output, torch.ones_like(output))
    errD_real.backward()
    fake = netG(z)
    output = netD(fake.detach()).view(-1)
    errD_fake = criterion(output, torch.zeros_like(output))
    errD_fake.backward()
    optD.step()
    netG.zero_grad()
    output = netD(fake).view(-1)
    errG = criterion(output, torch.ones_like(output))
    errG.backward()
    optG.step()
    return float((errD_real + errD_fake).detach()), float(errG.detach())


def keras_weights_as_torch(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            out.append(keras.ops.convert_to_numpy(layer.kernel).transpose(3, 2, 0, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            out += [keras.ops.convert_to_numpy(layer.gamma), keras.ops.convert_to_numpy(layer.beta)]
    return out


@pytest.mark.parametrize(
    "optimizer, atol",
    [
        ("sgd", 1e-6),  # exact gradients: float32 vs float64 round-off only
        ("adam", 2e-5),  # Adam normalises tiny gradients, amplifying round-off a little
    ],
)
def test_one_step_matches_pytorch_reference(optimizer, atol, monkeypatch):
    g = DCGANGenerator(SIZE, LATENT, NGF, seed=0)
    d = DCGANDiscriminator(SIZE, NDF, seed=1)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype("float32")
    z = rng.normal(size=(BATCH, LATENT)).astype("float32")
    netG, netD = reference_nets(g, d)

    if optimizer == "sgd":
        keras_opt = lambda: keras.optimizers.SGD(0.05)  # noqa: E731
        torch_opt = lambda p: torch.optim.SGD(p, lr=0.05)  # noqa: E731
    else:
        keras_opt = lambda: keras.optimizers.Adam(2e-4, beta_1=0.5, epsilon=1e-8)  # noqa: E731
        torch_opt = lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), eps=1e-8)  # noqa: E731

    gan = GAN(g, d, seed=0)
    gan.compile(d_optimizer=keras_opt(), g_optimizer=keras_opt())
    monkeypatch.setattr(GAN, "sample_latents", lambda self, n: keras.ops.convert_to_tensor(z))
    logs = gan.fit(real, batch_size=BATCH, epochs=1, verbose=0, shuffle=False).history

    to_torch = lambda x: torch.tensor(x.transpose(0, 3, 1, 2).astype("float64"))  # noqa: E731
    d_loss, g_loss = reference_step(
        netG, netD, to_torch(real), torch.tensor(z.astype("float64")).view(BATCH, LATENT, 1, 1), torch_opt
    )
    assert logs["d_loss"][0] == pytest.approx(d_loss, abs=1e-4)
    assert logs["g_loss"][0] == pytest.approx(g_loss, abs=1e-4)
    for net, model in ((netG, g), (netD, d)):
        ref = [p.detach().numpy() for p in net.parameters()]
        ours = keras_weights_as_torch(model)
        assert len(ref) == len(ours)
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, atol=atol, rtol=0)
    # BatchNorm running means follow torch's momentum 0.1 (variances differ by design:
    # torch keeps the unbiased batch variance, Keras the biased one).
    ref_bn = [m for m in netD if isinstance(m, nn.BatchNorm2d)][0]
    ours_bn = [l for l in d.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours_bn.moving_mean), ref_bn.running_mean.numpy(), atol=1e-6
    )
