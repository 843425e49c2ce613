"""GAN train step for the PyTorch backend (backward + no_grad optimizer updates)."""

import torch
from keras import ops

from nebula_keras3.training.precision import scale_loss


def train_step(self, data):
    real = data[0] if isinstance(data, (tuple, list)) else data  # [B, S, S, 3] in [-1, 1]
    G, D = self.generator, self.discriminator
    z = self.sample_latents(real.shape[0])  # [B, latent]
    fake = G(z, training=True)  # [B, S, S, 3]

    # D: BCE(1, D(x)) + BCE(0, D(G(z))), G's output detached.
    D.zero_grad()
    real_logits = D(real, training=True)  # [B, 1]
    fake_logits = D(fake.detach(), training=True)
    d_loss = self.real_fake_loss(real_logits, fake_logits)
    scale_loss(self.d_optimizer, d_loss).backward()  # fp16: x loss scale, unscaled by the optimizer
    with torch.no_grad():
        self.d_optimizer.apply([v.value.grad for v in D.trainable_variables], D.trainable_variables)

    # G: BCE(1, D(G(z))) through the updated D. backward() also fills D's grads:
    # they are cleared before D's next update and never applied.
    G.zero_grad()
    gen_logits = D(fake, training=True)
    g_loss = self.generator_loss(gen_logits)
    scale_loss(self.g_optimizer, g_loss).backward()
    with torch.no_grad():
        self.g_optimizer.apply([v.value.grad for v in G.trainable_variables], G.trainable_variables)
        self.optimizer.iterations.assign_add(1)

    return {
        "d_loss": d_loss.detach(),
        "g_loss": g_loss.detach(),
        "d_real": ops.mean(ops.sigmoid(real_logits.detach())),
        "d_fake": ops.mean(ops.sigmoid(fake_logits.detach())),
    }
