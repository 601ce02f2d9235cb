"""Adaptive primitives (Adam and its family, RMSprop, Adagrad, Adadelta, Lion, RAdam) against
float64 NumPy oracles written from each paper's update rule, as the primitive's docstring states it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_transforms_support import assert_trajectory, leafwise, random_trees, run

import optjax

# ---------------------------------------------------------------- oracles: the formulas, in float64


def adam_spec(gs, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, *, nesterov):
    """Kingma & Ba 2014, Algorithm 1; with nesterov, Dozat 2016's NAdam first moment."""
    m, v = np.zeros_like(gs[0]), np.zeros_like(gs[0])
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        if nesterov:
            m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        yield m_hat / (np.sqrt(v_hat + eps_root) + eps), {"mu": m, "nu": v}


def amsgrad_spec(gs, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, *, max_of_raw_nu):
    """Reddi et al. 2018: Adam whose second moment never decreases."""
    m, v, v_max = np.zeros_like(gs[0]), np.zeros_like(gs[0]), np.zeros_like(gs[0])
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        if max_of_raw_nu:  # the maximum of the raw v_t, bias-corrected afterwards
            v_max = np.maximum(v_max, v)
            denom = np.sqrt(v_max / (1 - b2**t) + eps_root) + eps
        else:  # the maximum of the bias-corrected v̂_t
            v_max = np.maximum(v_max, v / (1 - b2**t))
            denom = np.sqrt(v_max + eps_root) + eps
        yield m / (1 - b1**t) / denom, {"mu": m, "nu": v, "nu_max": v_max}


def adamax_spec(gs, b1=0.9, b2=0.999, eps=1e-8, *, eps_in_max):
    """Kingma & Ba 2014, Algorithm 2 (Section 7.1), with eps in the max or in the denominator."""
    m, u = np.zeros_like(gs[0]), np.zeros_like(gs[0])
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        if eps_in_max:
            u = np.maximum(b2 * u, np.abs(g) + eps)
            step = m / (1 - b1**t) / u
        else:
            u = np.maximum(b2 * u, np.abs(g))
            step = m / (1 - b1**t) / (u + eps)
        yield step, {"mu": m, "nu": u}


def _denominator(v, eps, eps_in_sqrt):
    return np.sqrt(v + eps) if eps_in_sqrt else np.sqrt(v) + eps


def rms_spec(gs, decay=0.9, eps=1e-8, initial_scale=0.0, *, eps_in_sqrt, bias_correction):
    """RMSprop (Tieleman & Hinton 2012)."""
    v = np.full_like(gs[0], initial_scale)
    for t, g in enumerate(gs, start=1):
        v = decay * v + (1 - decay) * g**2
        v_hat = v / (1 - decay**t) if bias_correction else v
        yield g / _denominator(v_hat, eps, eps_in_sqrt), {"nu": v}


def stddev_spec(gs, decay=0.9, eps=1e-8, initial_scale=0.0, *, eps_in_sqrt, bias_correction):
    """Centered RMSprop (Graves 2013, eq. 38-45): divide by sqrt(E[g^2] - E[g]^2)."""
    m, v = np.zeros_like(gs[0]), np.full_like(gs[0], initial_scale)
    for t, g in enumerate(gs, start=1):
        m = decay * m + (1 - decay) * g
        v = decay * v + (1 - decay) * g**2
        c = 1 - decay**t if bias_correction else 1.0
        yield g / _denominator(v / c - (m / c) ** 2, eps, eps_in_sqrt), {"mu": m, "nu": v}


def rss_spec(gs, initial_accumulator_value=0.1, eps=1e-7, *, eps_in_sqrt):
    """Adagrad (Duchi et al. 2011): divide by the root of the running sum of g^2."""
    s = np.full_like(gs[0], initial_accumulator_value)
    for g in gs:
        s = s + g**2
        denom = np.where(s > 0, _denominator(s, eps, eps_in_sqrt), 1.0)
        yield np.where(s > 0, g / denom, 0.0), {"sum_of_squares": s}


def adadelta_spec(gs, rho=0.9, eps=1e-6):
    """Zeiler 2012, Algorithm 1 (the step returned positive, as a gradient-like update)."""
    e_g, e_x = np.zeros_like(gs[0]), np.zeros_like(gs[0])
    for g in gs:
        e_g = rho * e_g + (1 - rho) * g**2
        dx = np.sqrt(e_x + eps) / np.sqrt(e_g + eps) * g
        e_x = rho * e_x + (1 - rho) * dx**2
        yield dx, {"e_g": e_g, "e_x": e_x}


def lion_spec(gs, b1=0.9, b2=0.99):
    """Chen et al. 2023, Algorithm 2 (weight decay left out: it is add_decayed_weights)."""
    m = np.zeros_like(gs[0])
    for g in gs:
        c = b1 * m + (1 - b1) * g
        m = b2 * m + (1 - b2) * g
        yield np.sign(c), {"mu": m}


def radam_rho(t, b2):
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf, rho_inf - 2 * t * b2**t / (1 - b2**t)


def radam_spec(gs, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0):
    """Liu et al. 2020, Algorithm 2; the paper's tractability test is rho_t > 4, optjax's
    default threshold is 5 (torch.optim.RAdam's)."""
    m, v = np.zeros_like(gs[0]), np.zeros_like(gs[0])
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        rho_inf, rho = radam_rho(t, b2)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            yield r * m_hat / (np.sqrt(v / (1 - b2**t) + eps_root) + eps), {"mu": m, "nu": v}
        else:
            yield m_hat, {"mu": m, "nu": v}


# ---------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "hyper",
    [
        {"nesterov": False},
        {"b1": 0.5, "b2": 0.9, "eps": 1e-3, "nesterov": False},
        {"eps_root": 1e-4, "nesterov": False},
        {"nesterov": True},
        {"nesterov": True, "b1": 0.8, "b2": 0.95, "eps_root": 1e-6},
    ],
    ids=str,
)
def test_scale_by_adam_matches_spec(hyper):
    grads = random_trees(20)
    got = run(optjax.scale_by_adam(**hyper), grads)
    assert_trajectory(got, leafwise(adam_spec, grads, **hyper))


def test_scale_by_adam_mu_dtype_bf16_stays_close():
    grads = random_trees(21)
    got = run(optjax.scale_by_adam(mu_dtype=jnp.bfloat16, nesterov=False), grads)
    for _, state in got:
        assert {m.dtype for m in state.mu.values()} == {jnp.dtype(jnp.bfloat16)}
        assert {v.dtype for v in state.nu.values()} == {jnp.dtype(jnp.float32)}
    # m_t is rounded to bf16 (8 significant bits, 0.4% relative) at every step; the updates are
    # O(1), so an error of a few 1e-3 per step over 6 steps stays under 2e-2.
    expected = [(u, {}) for u, _ in leafwise(adam_spec, grads, nesterov=False)]
    assert_trajectory(got, expected, rtol=2e-2, atol=2e-2)


# With b2 = 0.999 the raw v_t only grows over a few steps of O(1) gradients (the check in the test
# catches a run where the maximum never matters), so the raw-maximum cases use a smaller b2.
AMSGRAD = [
    {"max_of_raw_nu": False},
    {"b2": 0.9, "max_of_raw_nu": True},
    {"b2": 0.5, "eps_root": 1e-3, "max_of_raw_nu": False},
    {"b1": 0.5, "b2": 0.5, "max_of_raw_nu": True},
]


@pytest.mark.parametrize("hyper", AMSGRAD, ids=str)
def test_scale_by_amsgrad_matches_spec(hyper):
    grads = random_trees(22)
    got = run(optjax.scale_by_amsgrad(**hyper), grads)
    expected = leafwise(amsgrad_spec, grads, **hyper)
    assert_trajectory(got, expected)
    # The running maximum matters on this run: AMSGrad's steps differ from Adam's somewhere.
    adam_hyper = {k: v for k, v in hyper.items() if k != "max_of_raw_nu"}
    adam = leafwise(adam_spec, grads, nesterov=False, **adam_hyper)
    assert any(
        not np.allclose(a[0][k], b[0][k], rtol=1e-3) for a, b in zip(adam, expected) for k in a[0]
    )


@pytest.mark.parametrize(
    "hyper",
    [
        {"eps_in_max": False},
        {"eps_in_max": True},
        {"b1": 0.5, "b2": 0.8, "eps": 1e-3, "eps_in_max": False},
        {"b2": 0.8, "eps": 1e-3, "eps_in_max": True},
    ],
    ids=str,
)
def test_scale_by_adamax_matches_spec(hyper):
    grads = random_trees(23)
    got = run(optjax.scale_by_adamax(**hyper), grads)
    assert_trajectory(got, leafwise(adamax_spec, grads, **hyper))


# The form flags are spelled out in every case, so that the tests do not depend on defaults.
RMS = [
    {"eps_in_sqrt": True, "bias_correction": False},
    {"eps_in_sqrt": False, "bias_correction": False},
    {"eps_in_sqrt": True, "bias_correction": True},
    {"eps_in_sqrt": False, "bias_correction": True, "decay": 0.5},
    {"eps_in_sqrt": True, "bias_correction": False, "initial_scale": 1.0},
    {"eps_in_sqrt": False, "bias_correction": True, "initial_scale": 0.5, "eps": 1e-3},
]


@pytest.mark.parametrize("hyper", RMS, ids=str)
def test_scale_by_rms_matches_spec(hyper):
    grads = random_trees(24)
    got = run(optjax.scale_by_rms(**hyper), grads)
    assert_trajectory(got, leafwise(rms_spec, grads, **hyper))


@pytest.mark.parametrize("hyper", RMS, ids=str)
def test_scale_by_stddev_matches_spec(hyper):
    grads = random_trees(25)
    got = run(optjax.scale_by_stddev(**hyper), grads)
    # With bias correction the step-1 variance is exactly 0 (m̂_1 = g_1, v̂_1 = g_1^2): a 0 - 0
    # whose float32 rounding sign decides the result (see the test below); compare from step 2.
    first = 2 if hyper["bias_correction"] else 1
    assert_trajectory(got, leafwise(stddev_spec, grads, **hyper), first_step=first)


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_scale_by_stddev_bias_corrected_first_step_is_finite(eps_in_sqrt):
    g = {"g": np.random.default_rng(26).normal(size=1000).astype(np.float32)}
    tx = optjax.scale_by_stddev(eps=1e-8, eps_in_sqrt=eps_in_sqrt, bias_correction=True)
    ((u, _),) = run(tx, [g])
    assert np.all(np.isfinite(u["g"]))


@pytest.mark.parametrize(
    "hyper",
    [
        {"eps_in_sqrt": True},
        {"eps_in_sqrt": False},
        {"initial_accumulator_value": 0.0, "eps": 0.0, "eps_in_sqrt": True},
        {"initial_accumulator_value": 1.0, "eps": 1e-3, "eps_in_sqrt": False},
    ],
    ids=str,
)
def test_scale_by_rss_matches_spec(hyper):
    grads = random_trees(27)
    for g in grads:
        g["vector"][0] = 0.0  # a coordinate that never sees a gradient: its update stays 0
    got = run(optjax.scale_by_rss(**hyper), grads)
    assert_trajectory(got, leafwise(rss_spec, grads, **hyper))


@pytest.mark.parametrize("hyper", [{}, {"rho": 0.5, "eps": 1e-3}, {"rho": 0.95}], ids=str)
def test_scale_by_adadelta_matches_spec(hyper):
    grads = random_trees(28)
    got = run(optjax.scale_by_adadelta(**hyper), grads)
    assert_trajectory(got, leafwise(adadelta_spec, grads, **hyper))


@pytest.mark.parametrize("hyper", [{}, {"b1": 0.5, "b2": 0.3}, {"b1": 0.0, "b2": 0.0}], ids=str)
def test_scale_by_lion_matches_spec(hyper):
    grads = random_trees(29)
    got = run(optjax.scale_by_lion(**hyper), grads)
    assert_trajectory(got, leafwise(lion_spec, grads, **hyper))


RADAM_STEPS = 8  # long enough for rho_t to cross the threshold in every case below


@pytest.mark.parametrize(
    "hyper",
    [{}, {"b2": 0.9}, {"b2": 0.9, "threshold": 4.0, "eps_root": 1e-4}, {"threshold": 4.0}],
    ids=str,
)
def test_scale_by_radam_matches_spec(hyper):
    b2, threshold = hyper.get("b2", 0.999), hyper.get("threshold", 5.0)
    rhos = [radam_rho(t, b2)[1] for t in range(1, RADAM_STEPS + 1)]
    # Both branches are exercised, and no rho_t sits so near the threshold that float32 could
    # decide the branch differently from float64.
    assert min(rhos) < threshold < max(rhos)
    assert min(abs(r - threshold) for r in rhos) > 1e-3
    grads = random_trees(30, steps=RADAM_STEPS)
    got = run(optjax.scale_by_radam(**hyper), grads)
    assert_trajectory(got, leafwise(radam_spec, grads, **hyper))


# The bias corrections 1 - b^t (and RAdam's rho_t) are scalars of the step: formed once, not in
# each leaf's formula, where every leaf traced its own exp and XLA had thousands of copies to
# merge on a large model.
BIAS_CORRECTED = {
    "adam": lambda: optjax.scale_by_adam(),
    "nadam": lambda: optjax.scale_by_adam(nesterov=True),
    "amsgrad": lambda: optjax.scale_by_amsgrad(),
    "amsgrad_raw": lambda: optjax.scale_by_amsgrad(max_of_raw_nu=True),
    "adamax": lambda: optjax.scale_by_adamax(),
    "rms": lambda: optjax.scale_by_rms(bias_correction=True),
    "stddev": lambda: optjax.scale_by_stddev(bias_correction=True),
    "radam": lambda: optjax.scale_by_radam(nesterov=True),
    "radam_raw_nu": lambda: optjax.scale_by_radam(eps_on_raw_nu=True),
    "belief": lambda: optjax.scale_by_belief(nesterov=True),
    "adan": lambda: optjax.scale_by_adan(),
    "yogi": lambda: optjax.scale_by_yogi(),
    "tree.bias_correction": lambda: optjax.stateless(
        lambda g, p: optjax.tree.bias_correction(g, 0.9, 3)
    ),
}
TRANSCENDENTAL = re.compile(
    r"stablehlo\.(exponential|exponential_minus_one|log|log_plus_one|power)\b"
)


@pytest.mark.parametrize("name", BIAS_CORRECTED)
def test_bias_corrections_are_formed_once_per_step_not_per_leaf(name):
    tx = BIAS_CORRECTED[name]()

    def transcendentals(leaves):
        params = {f"p{i}": jnp.full((i + 2,), 0.5) for i in range(leaves)}
        text = jax.jit(tx.update).lower(params, tx.init(params), params).as_text()
        return len(TRANSCENDENTAL.findall(text))

    assert transcendentals(1) > 0  # the test sees the corrections
    assert transcendentals(4) == transcendentals(1)
