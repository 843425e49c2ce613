"""GAN train step for the PyTorch backend: backward + no_grad optimizer updates.

Only the gradient mechanics live here; draws, augmentation, losses, R1 and EMA
math come from ``GAN`` (see ``steps/__init__``).
"""

import torch
from keras import ops

from nebula_keras3.training.precision import scale_loss


def train_step(self, data):
    real = self.unpack(data)  # [B, S, S, 3] in [-1, 1]
    G, D = self.generator, self.discriminator
    step = int(ops.convert_to_numpy(self.optimizer.iterations))  # GAN steps done before this one
    draws = self.draw(real.shape[0])
    fake = G(draws["z"], training=True)  # [B, S, S, 3]

    # D: adversarial loss on augmented reals and (detached) fakes, + lazy R1 on the reals.
    D.zero_grad()
    real_in = self.augment_with(real, draws["real"])
    penalty = 0.0
    if self.uses_r1 and self.r1_due(step):  # python if: other steps skip the double backward
        real_in = real_in.detach().requires_grad_(True)
        real_logits = D(real_in, training=True)  # [B, 1]
        (input_grads,) = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
        penalty = self.r1_penalty(input_grads)
    else:
        real_logits = D(real_in, training=True)
    fake_logits = D(self.augment_with(fake.detach(), draws["fake"]), training=True)
    d_loss = self.real_fake_loss(real_logits, fake_logits)
    scale_loss(self.d_optimizer, d_loss + penalty).backward()  # fp16: x loss scale, unscaled by the optimizer
    with torch.no_grad():
        self.d_optimizer.apply([v.value.grad for v in D.trainable_variables], D.trainable_variables)
        ada_p = self.update_ada(step, real_logits.detach())  # ADA: sign(D(real)) steers p (None when off)

    # G: generator loss through the updated D on freshly augmented fakes. backward()
    # also fills D's grads: they are cleared before D's next update and never applied.
    G.zero_grad()
    gen_logits = D(self.augment_with(fake, draws["gen"]), training=True)
    g_loss = self.generator_loss(gen_logits)
    scale_loss(self.g_optimizer, g_loss).backward()
    with torch.no_grad():
        self.g_optimizer.apply([v.value.grad for v in G.trainable_variables], G.trainable_variables)
        self.update_ema(step)
        self.optimizer.iterations.assign_add(1)

    return self.step_logs(d_loss.detach(), g_loss.detach(), real_logits.detach(), fake_logits.detach(), ada_p)
