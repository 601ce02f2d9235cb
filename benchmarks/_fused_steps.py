"""Hand-written fused steps for benchmarks/optimizer_step.py: each optimizer's whole step (update
and apply) as one jitted function over a list of arrays, scalars formed once, written in the
shape XLA:CPU runs best (no array read by two loops that would force a copy, no temporary that
can be avoided). They are the lower bound a library step can reach in XLA; the same
hyperparameters as optimizer_step.libraries().

Each entry is ``(init(params) -> state, step(params, state, grads) -> (params, state))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optjax.transforms.factored import factored_dims

LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 1e-4


def _zeros(params):
    return [jnp.zeros_like(p) for p in params]


def sgd():
    def init(params):
        return _zeros(params)

    def step(params, trace, grads):
        trace = [g + 0.9 * v for g, v in zip(grads, trace)]
        return [p - LR * v for p, v in zip(params, trace)], trace

    return init, step


def adam(weight_decay=0.0, nesterov=False):
    def init(params):
        return jnp.zeros([], jnp.int32), _zeros(params), _zeros(params)

    def step(params, state, grads):
        count, mu, nu = state
        count = count + 1
        t = count.astype(jnp.float32)
        c1, c2 = 1 - B1**t, 1 - B2**t
        c1_next = 1 - B1 ** (t + 1)
        mu = [B1 * m + (1 - B1) * g for m, g in zip(mu, grads)]
        nu = [B2 * v + (1 - B2) * g * g for v, g in zip(nu, grads)]
        out = []
        for p, g, m, v in zip(params, grads, mu, nu):
            m_hat = B1 * m / c1_next + (1 - B1) * g / c1 if nesterov else m / c1
            u = m_hat / (jnp.sqrt(v / c2) + EPS)
            out.append(p - LR * (u + weight_decay * p) if weight_decay else p - LR * u)
        return out, (count, mu, nu)

    return init, step


def lion(b1=0.9, b2=0.99, weight_decay=1e-3):
    a = b1 / b2  # sign(b1 m_{t-1} + (1 - b1) g) = sign(a m_t + (1 - a) g): reads m once

    def init(params):
        return _zeros(params)

    def step(params, mu, grads):
        mu = [b2 * m + (1 - b2) * g for m, g in zip(mu, grads)]
        out = [
            p - LR * (jnp.sign(a * m + (1 - a) * g) + weight_decay * p)
            for p, m, g in zip(params, mu, grads)
        ]
        return out, mu

    return init, step


def _without(shape, axis):
    return tuple(n for i, n in enumerate(shape) if i != axis)


def adafactor(eps=1e-30, clip=1.0, min_scale=1e-3):
    def init(params):
        state = []
        for p in params:
            dims = factored_dims(p.shape, True, 128)
            if dims is None:
                state.append((jnp.zeros_like(p),))
            else:
                d_col, d_row = dims
                state.append(
                    (jnp.zeros(_without(p.shape, d_row)), jnp.zeros(_without(p.shape, d_col)))
                )
        return jnp.zeros([], jnp.int32), state

    def step(params, state, grads):
        count, moments = state
        decay = 1.0 - (count + 1).astype(jnp.float32) ** -0.8
        out, new_moments = [], []
        for p, g, mom in zip(params, grads, moments):
            dims = factored_dims(p.shape, True, 128)
            if dims is None:
                (v,) = mom
                v = decay * v + (1 - decay) * (g * g + eps)
                u = g / jnp.sqrt(v)
                sum_sq = jnp.sum(jnp.square(g) / v)
                new_moments.append((v,))
            else:
                d_col, d_row = dims
                r, c = mom
                r = decay * r + (1 - decay) * jnp.mean(g * g + eps, axis=d_row)
                c = decay * c + (1 - decay) * (jnp.mean(jnp.abs(g) * jnp.abs(g), axis=d_col) + eps)
                r_axis = d_col if d_col < d_row else d_col - 1
                row = jax.lax.rsqrt(r / jnp.mean(r, axis=r_axis, keepdims=True))
                col = jax.lax.rsqrt(c)
                u = g * (jnp.expand_dims(row, d_row) * jnp.expand_dims(col, d_col))
                # sum(u^2) = sum_i row_i^2 sum_j g_ij^2 / c_j: the same sum from a distinct
                # expression, so that XLA fuses it into its reduction instead of writing u out.
                inner = jnp.sum((g * jnp.expand_dims(1.0 / c, d_col)) * g, axis=d_row)
                sum_sq = jnp.sum(jnp.square(row) * inner)
                new_moments.append((r, c))
            u = u / jnp.maximum(1.0, jnp.sqrt(sum_sq / u.size) / clip)
            p_rms = jnp.maximum(jnp.sqrt(jnp.mean(p * p)), min_scale)
            out.append(p - LR * p_rms * u)
        return out, (count + 1, new_moments)

    return init, step


FUSED = {
    "sgd": sgd(),
    "adam": adam(),
    "adamw": adam(weight_decay=WD),
    "nadam": adam(nesterov=True),
    "lion": lion(),
    "adafactor": adafactor(),
}
