"""GAN train step for the TensorFlow backend (GradientTape)."""

import tensorflow as tf
from keras import ops

from nebula_keras3.training.precision import scale_loss


def train_step(self, data):
    real = data[0] if isinstance(data, (tuple, list)) else data  # [B, S, S, 3] in [-1, 1]
    batch = tf.shape(real)[0]
    G, D = self.generator, self.discriminator
    z = self.sample_latents(batch)  # [B, latent]

    with tf.GradientTape() as g_tape:
        fake = G(z, training=True)  # [B, S, S, 3]

        # D: BCE(1, D(x)) + BCE(0, D(G(z))), G's output held constant.
        with tf.GradientTape() as d_tape:
            real_logits = D(real, training=True)  # [B, 1]
            fake_logits = D(tf.stop_gradient(fake), training=True)
            d_loss = self.real_fake_loss(real_logits, fake_logits)
            scaled_d_loss = scale_loss(self.d_optimizer, d_loss)  # fp16: x loss scale
        d_grads = d_tape.gradient(scaled_d_loss, D.trainable_variables)
        self.d_optimizer.apply(d_grads, D.trainable_variables)

        # G: BCE(1, D(G(z))) through the updated D.
        gen_logits = D(fake, training=True)
        g_loss = self.generator_loss(gen_logits)
        scaled_g_loss = scale_loss(self.g_optimizer, g_loss)
    g_grads = g_tape.gradient(scaled_g_loss, G.trainable_variables)
    self.g_optimizer.apply(g_grads, G.trainable_variables)
    self.optimizer.iterations.assign_add(1)

    return {
        "d_loss": d_loss,
        "g_loss": g_loss,
        "d_real": ops.mean(ops.sigmoid(real_logits)),
        "d_fake": ops.mean(ops.sigmoid(fake_logits)),
    }
