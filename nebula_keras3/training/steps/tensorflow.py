"""GAN train step for the TensorFlow backend (GradientTape; nested tape for R1).

Only the gradient mechanics live here; draws, augmentation, losses, R1 and EMA
math come from ``GAN`` (see ``steps/__init__``).
"""

import tensorflow as tf

from nebula_keras3.training.precision import scale_loss


def train_step(self, data):
    real = self.unpack(data)  # [B, S, S, 3] in [-1, 1]
    G, D = self.generator, self.discriminator
    step = self.optimizer.iterations.value  # GAN steps done before this one
    draws = self.draw(tf.shape(real)[0])

    with tf.GradientTape() as g_tape:
        fake = G(draws["z"], training=True)  # [B, S, S, 3]

        with g_tape.stop_recording():
            real_in = self.augment_with(real, draws["real"])
            fake_in = self.augment_with(tf.stop_gradient(fake), draws["fake"])

            def d_gradients(with_r1):
                # D: adversarial loss on augmented reals and fakes (+ R1 on the reals).
                def run():
                    with tf.GradientTape() as d_tape:
                        if with_r1:
                            with tf.GradientTape() as x_tape:
                                x_tape.watch(real_in)
                                real_logits = D(real_in, training=True)  # [B, 1]
                            penalty = self.r1_penalty(x_tape.gradient(real_logits, real_in))
                        else:
                            real_logits, penalty = D(real_in, training=True), 0.0
                        fake_logits = D(fake_in, training=True)
                        d_loss = self.real_fake_loss(real_logits, fake_logits)
                        total = scale_loss(self.d_optimizer, d_loss + penalty)  # fp16: x loss scale
                    return d_loss, real_logits, fake_logits, d_tape.gradient(total, D.trainable_variables)

                return run

            if self.uses_r1:  # tf.cond: steps without R1 skip the double backward
                d_loss, real_logits, fake_logits, d_grads = tf.cond(
                    self.r1_due(step), d_gradients(True), d_gradients(False)
                )
            else:
                d_loss, real_logits, fake_logits, d_grads = d_gradients(False)()
            self.d_optimizer.apply(d_grads, D.trainable_variables)
            ada_p = self.update_ada(step, real_logits)  # ADA: sign(D(real)) steers p (None when off)

        # G: generator loss through the updated D on freshly augmented fakes.
        gen_logits = D(self.augment_with(fake, draws["gen"]), training=True)
        g_loss = self.generator_loss(gen_logits)
        scaled_g_loss = scale_loss(self.g_optimizer, g_loss)
    g_grads = g_tape.gradient(scaled_g_loss, G.trainable_variables)
    self.g_optimizer.apply(g_grads, G.trainable_variables)
    self.update_ema(step)
    self.optimizer.iterations.assign_add(1)

    return self.step_logs(d_loss, g_loss, real_logits, fake_logits, ada_p)
