"""GAN train step for the JAX backend: stateless, both optimizers' states carried.

``fit`` hands us ``state = (trainable, non_trainable, optimizer, metrics)`` value
lists ordered like the GAN's ``trainable_variables``, ``non_trainable_variables``,
``optimizer.variables`` (the MultiOptimizer: its own counters, then D's Adam
and G's Adam) and ``metrics_variables``; we return the same structure updated.
D's state (BatchNorm statistics, spectral-norm vectors) is threaded through the
real pass, the fake pass and the G step, as torch does implicitly; the seed
generator's state through the step's draws; the EMA generator's values are
blended after G's update; ADA's p and sign accumulator (``ada_next``) are
updated after D's. Only the gradient mechanics live here; draws,
augmentation, losses, R1, EMA and ADA math come from ``GAN``.
"""

import jax
from keras import StatelessScope, ops

from nebula_keras3.training.precision import scale_loss


def _pick(variables, lookup):
    return [lookup[id(v)] for v in variables]


def train_step(self, state, data):
    trainable, non_trainable, opt_values, metrics_values = state
    real = self.unpack(data)  # [B, S, S, 3] in [-1, 1]
    G, D = self.generator, self.discriminator
    values = {id(v): x for v, x in zip(self.trainable_variables, trainable)}
    values.update({id(v): x for v, x in zip(self.non_trainable_variables, non_trainable)})
    values.update({id(v): x for v, x in zip(self.optimizer.variables, opt_values)})
    step = values[id(self.optimizer.iterations)]  # GAN steps done before this one

    # The step's random draws from the seed generator, whose state fit keeps in `non_trainable`.
    # ADA: its gates are drawn against the p that fit threads ([p, sign_sum, count]; [] when off).
    ada_values = _pick(self.ada_variables, values)
    seed_state = self.seed_generator.state
    with StatelessScope(state_mapping=[(seed_state, values[id(seed_state)])]) as scope:
        draws = self.draw(real.shape[0], ada_values[0] if ada_values else None)  # z [B, latent] + augmentation
        values[id(seed_state)] = scope.get_current_value(seed_state)

    # One G forward; its VJP turns dL/dfake into G's gradients later.
    g_train, g_state = _pick(G.trainable_variables, values), _pick(G.non_trainable_variables, values)

    def g_forward(g_train):
        return G.stateless_call(g_train, g_state, draws["z"], training=True)  # fake [B, S, S, 3], G's BN stats

    fake, g_vjp, g_state = jax.vjp(g_forward, g_train, has_aux=True)

    # D: adversarial loss on augmented reals and fakes (G's output held constant), + lazy R1.
    d_train, d_state = _pick(D.trainable_variables, values), _pick(D.non_trainable_variables, values)
    real_in = self.augment_with(real, draws["real"])
    fake_in = self.augment_with(jax.lax.stop_gradient(fake), draws["fake"])

    def d_objective(d_train, d_state, with_r1):
        if with_r1:
            def summed_logits(x, d_state):
                logits, d_state = D.stateless_call(d_train, d_state, x, training=True)  # [B, 1]
                return ops.sum(logits), (logits, d_state)

            input_grads, (real_logits, d_state) = jax.grad(summed_logits, has_aux=True)(real_in, d_state)
            penalty = self.r1_penalty(input_grads)
        else:
            real_logits, d_state = D.stateless_call(d_train, d_state, real_in, training=True)  # [B, 1]
            penalty = 0.0
        fake_logits, d_state = D.stateless_call(d_train, d_state, fake_in, training=True)
        d_loss = self.real_fake_loss(real_logits, fake_logits)
        # fp16: differentiate the loss x loss scale; the LossScaleOptimizer unscales.
        return scale_loss(self.d_optimizer, d_loss + penalty, values), (d_loss, d_state, real_logits, fake_logits)

    def d_gradients(with_r1):
        def run(d_train, d_state):
            (_, aux), grads = jax.value_and_grad(d_objective, has_aux=True)(d_train, d_state, with_r1)
            return aux, grads

        return run

    if self.uses_r1:  # lax.cond: steps without R1 skip the double backward at run time
        (d_loss, d_state, real_logits, fake_logits), d_grads = jax.lax.cond(
            self.r1_due(step), d_gradients(True), d_gradients(False), d_train, d_state
        )
    else:
        (d_loss, d_state, real_logits, fake_logits), d_grads = d_gradients(False)(d_train, d_state)
    d_opt = _pick(self.d_optimizer.variables, values)
    d_train, d_opt = self.d_optimizer.stateless_apply(d_opt, d_grads, d_train)
    ada_p = None
    if self.uses_ada:  # sign(D(real)) steers p
        ada_values = self.ada_next(ada_values, step, real_logits)
        values.update({id(v): x for v, x in zip(self.ada_variables, ada_values)})
        ada_p = ada_values[0]

    # G: generator loss through the updated D on freshly augmented fakes; gradient w.r.t. fake, then G's VJP.
    def g_objective(fake, d_state):
        gen_logits, d_state = D.stateless_call(d_train, d_state, self.augment_with(fake, draws["gen"]),
                                               training=True)
        g_loss = self.generator_loss(gen_logits)
        return scale_loss(self.g_optimizer, g_loss, values), (g_loss, d_state)

    (_, (g_loss, d_state)), fake_grad = jax.value_and_grad(g_objective, has_aux=True)(fake, d_state)
    (g_grads,) = g_vjp(fake_grad)
    g_opt = _pick(self.g_optimizer.variables, values)
    g_train, g_opt = self.g_optimizer.stateless_apply(g_opt, g_grads, g_train)

    # Write everything back in fit's order.
    for variables, new in (
        (G.trainable_variables, g_train),
        (G.non_trainable_variables, g_state),
        (D.trainable_variables, d_train),
        (D.non_trainable_variables, d_state),
        (self.d_optimizer.variables, d_opt),
        (self.g_optimizer.variables, g_opt),
    ):
        values.update({id(v): x for v, x in zip(variables, new)})
    if self.generator_ema is not None:
        decay = self.ema_decay_at(step)
        for e, v in zip(self.generator_ema.variables, G.variables):
            values[id(e)] = self.ema_blend(values[id(e)], values[id(v)], decay)
    values[id(self.optimizer.iterations)] = step + 1

    logs = self.step_logs(d_loss, g_loss, real_logits, fake_logits, ada_p)
    state = (
        _pick(self.trainable_variables, values),
        _pick(self.non_trainable_variables, values),
        _pick(self.optimizer.variables, values),
        metrics_values,
    )
    return logs, state
