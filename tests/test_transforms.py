"""Scaling, momentum, clipping, weight decay and noise primitives against float64 NumPy oracles of
their formulas; and, for every primitive in optjax/transforms, the checks they all share: dtypes
kept (bf16 included), one compilation under jit, an int32 step count that saturates, and
hyperparameter validation.

Adaptive primitives: test_transforms_adaptive.py; Adafactor's: test_transforms_factored.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_transforms_support import (
    SHAPES,
    CountingJit,
    assert_trajectory,
    has_count,
    leafwise,
    random_trees,
    run,
)

import optjax

INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------- oracles: the formulas, in float64


def scale_spec(gs, step_size):
    for g in gs:
        yield step_size * g, {}


def schedule_spec(gs, step_size_of):
    for t, g in enumerate(gs):  # schedules see the zero-based step t = 0, 1, ...
        yield step_size_of(t) * g, {}


def trace_spec(gs, decay, nesterov):
    v = np.zeros_like(gs[0])
    for g in gs:
        v = g + decay * v
        yield (g + decay * v if nesterov else v), {"trace": v}


def ema_spec(gs, decay, debias):
    m = np.zeros_like(gs[0])
    for t, g in enumerate(gs, start=1):
        m = decay * m + (1 - decay) * g
        yield (m / (1 - decay**t) if debias else m), {"ema": m}


def clip_spec(gs, max_delta):
    for g in gs:
        yield np.clip(g, -max_delta, max_delta), {}


def clip_by_block_rms_spec(gs, threshold):
    for g in gs:
        yield g / max(1.0, np.sqrt(np.mean(g**2)) / threshold), {}


def clip_by_global_norm_spec(grads, max_norm):
    """Pascanu et al. 2013, Algorithm 1, over the whole tree."""
    for tree in grads:
        tree = {k: np.asarray(x, np.float64) for k, x in tree.items()}
        norm = np.sqrt(sum(np.sum(x**2) for x in tree.values()))
        factor = 1.0 if norm <= max_norm else max_norm / norm
        yield {k: factor * x for k, x in tree.items()}, {}


def param_block_rms_spec(gs, p, min_scale):
    for g in gs:
        yield max(np.sqrt(np.mean(p**2)), min_scale) * g, {}


# -------------------------------------------------------------------------- scaling and schedules


@pytest.mark.parametrize("step_size", [2.5, -0.5, 0.0])
def test_scale_matches_spec(step_size):
    grads = random_trees(0)
    got = run(optjax.scale(step_size), grads)
    assert_trajectory(got, leafwise(scale_spec, grads, step_size=step_size))


def _decaying(count):  # a schedule: the int32 step count is cast before float arithmetic
    return 0.1 / (1.0 + count.astype(jnp.float32))


@pytest.mark.parametrize("flip_sign", [True, False])
def test_scale_by_learning_rate_float(flip_sign):
    grads = random_trees(1)
    got = run(optjax.scale_by_learning_rate(0.1, flip_sign=flip_sign), grads)
    sign = -1.0 if flip_sign else 1.0
    assert_trajectory(got, leafwise(scale_spec, grads, step_size=sign * 0.1))


@pytest.mark.parametrize("flip_sign", [True, False])
def test_scale_by_learning_rate_schedule(flip_sign):
    grads = random_trees(2)
    got = run(optjax.scale_by_learning_rate(_decaying, flip_sign=flip_sign), grads)
    sign = -1.0 if flip_sign else 1.0
    expected = leafwise(schedule_spec, grads, step_size_of=lambda t: sign * 0.1 / (1 + t))
    assert_trajectory(got, expected)


def test_scale_by_schedule_matches_spec():
    grads = random_trees(3)
    got = run(optjax.scale_by_schedule(_decaying), grads)
    assert_trajectory(got, leafwise(schedule_spec, grads, step_size_of=lambda t: 0.1 / (1 + t)))


# ---------------------------------------------------------------------------------------- momentum


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
@pytest.mark.parametrize("decay", [0.9, 0.5, 0.0])
def test_trace_matches_spec(decay, nesterov):
    grads = random_trees(4)
    got = run(optjax.trace(decay=decay, nesterov=nesterov), grads)
    assert_trajectory(got, leafwise(trace_spec, grads, decay=decay, nesterov=nesterov))


@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("decay", [0.9, 0.3])
def test_ema_matches_spec(decay, debias):
    grads = random_trees(5)
    got = run(optjax.ema(decay, debias=debias), grads)
    assert_trajectory(got, leafwise(ema_spec, grads, decay=decay, debias=debias))


# ---------------------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("max_delta", [0.5, 0.0, 10.0])
def test_clip_matches_spec(max_delta):
    grads = random_trees(6)
    got = run(optjax.clip(max_delta), grads)
    assert_trajectory(got, leafwise(clip_spec, grads, max_delta=max_delta))


# The tree's global norm is about sqrt(35) ~ 6: 1.0 always clips, 100.0 never does.
@pytest.mark.parametrize("max_norm", [1.0, 100.0, 0.0])
def test_clip_by_global_norm_matches_spec(max_norm):
    grads = random_trees(7)
    got = run(optjax.clip_by_global_norm(max_norm), grads)
    assert_trajectory(got, list(clip_by_global_norm_spec(grads, max_norm)))


def test_clip_by_global_norm_at_the_threshold_keeps_the_gradient():
    g = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(())}
    tx = optjax.clip_by_global_norm(5.0)
    np.testing.assert_array_equal(tx.update(g, tx.init(g))[0]["a"], [3.0, 4.0])


def test_clip_by_global_norm_zero_gradient_and_zero_max_norm_gives_zeros():
    zeros = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    ((u, _),) = run(optjax.clip_by_global_norm(0.0), [zeros])
    for leaf in jax.tree.leaves(u):
        np.testing.assert_array_equal(leaf, np.zeros_like(leaf))  # zeros, not NaN from 0/0


# Leaves of standard normals have rms ~1: at 0.8 some leaves are clipped and some are not.
@pytest.mark.parametrize("threshold", [0.8, 100.0, 1e-3])
def test_clip_by_block_rms_matches_spec(threshold):
    grads = random_trees(8)
    got = run(optjax.clip_by_block_rms(threshold), grads)
    assert_trajectory(got, leafwise(clip_by_block_rms_spec, grads, threshold=threshold))


# ---------------------------------------------------------------------- parameter-dependent scaling


@pytest.mark.parametrize("weight_decay", [0.1, 0.0])
@pytest.mark.parametrize("mask", ["none", "tree", "function"])
def test_add_decayed_weights_matches_spec(weight_decay, mask):
    grads, (params,) = random_trees(9), random_trees(10, steps=1)
    on = {"scalar": True, "vector": False, "matrix": True, "tensor": False}
    masks = {
        "none": None,
        "tree": on,
        "function": lambda p: {k: k in ("scalar", "matrix") for k in p},
    }
    got = run(optjax.add_decayed_weights(weight_decay, masks[mask]), grads, params=params)
    decayed = on if mask != "none" else dict.fromkeys(on, True)
    p64 = {k: np.asarray(x, np.float64) for k, x in params.items()}
    expected = [
        ({k: np.float64(g[k]) + weight_decay * p64[k] * decayed[k] for k in g}, {})  # g + wd p
        for g in grads
    ]
    assert_trajectory(got, expected)


def test_add_decayed_weights_errors():
    g = {"a": jnp.ones(2), "b": jnp.ones(())}
    tx = optjax.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(g, tx.init(g))
    masked = optjax.add_decayed_weights(0.1, mask={"a": True})
    with pytest.raises(ValueError, match="mask"):
        masked.update(g, masked.init(g), g)


@pytest.mark.parametrize("min_scale", [1e-3, 0.5, 10.0])
def test_scale_by_param_block_rms_matches_spec(min_scale):
    grads, (params,) = random_trees(11), random_trees(12, steps=1)
    params["vector"] = np.full(3, 1e-5, np.float32)  # rms below every min_scale
    got = run(optjax.scale_by_param_block_rms(min_scale), grads, params=params)
    assert_trajectory(got, leafwise(param_block_rms_spec, grads, params, min_scale=min_scale))


# ------------------------------------------------------------------------------------------- noise

NOISE_SIDE = 512  # 512 x 512 = 262144 samples per leaf and step
# The seed only enters through init, so one compiled update serves every seed.
_NOISY = CountingJit(optjax.add_noise(eta=0.3, gamma=0.55))


def _noise(seed, steps, g=3.0):
    """The noise added at each step, u_t - g_t, on two equal-shaped leaves."""
    leaf = np.full((NOISE_SIDE,) * 2, g, np.float32)
    state = optjax.add_noise(eta=0.3, gamma=0.55, seed=seed).init(leaf)
    got = run(_NOISY.tx, [{"a": leaf, "b": leaf}] * steps, state=state, jitted=_NOISY)
    return [{k: np.asarray(u[k], np.float64).ravel() - g for k in u} for u, _ in got]


def test_add_noise_statistics():
    eta, gamma, n = 0.3, 0.55, NOISE_SIDE**2
    noise = _noise(seed=0, steps=5)
    for t, z in enumerate(noise, start=1):
        var = eta / t**gamma  # Neelakantan et al. 2015, eq. 1, with t = 1, 2, ...
        for x in z.values():
            # Five standard errors of each statistic for n samples of N(0, var): the mean's is
            # sqrt(var / n), the sample variance's var sqrt(2 / (n - 1)), and the fraction
            # within one sigma (0.6827 for a Gaussian) has sqrt(p (1 - p) / n).
            assert abs(x.mean()) < 5 * np.sqrt(var / n)
            assert abs(x.var() - var) < 5 * var * np.sqrt(2 / (n - 1))
            within = np.mean(np.abs(x) < np.sqrt(var))
            assert abs(within - 0.6827) < 5 * np.sqrt(0.6827 * 0.3173 / n)
        # Independent across leaves and across steps: correlations within 5 / sqrt(n) of zero.
        assert abs(np.corrcoef(z["a"], z["b"])[0, 1]) < 5 / np.sqrt(n)
        if t > 1:
            assert abs(np.corrcoef(z["a"], noise[t - 2]["a"])[0, 1]) < 5 / np.sqrt(n)


def test_add_noise_seed():
    n = NOISE_SIDE**2
    first, again, other = (_noise(seed, steps=1)[0]["a"] for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert abs(np.corrcoef(first, other)[0, 1]) < 5 / np.sqrt(n)


def test_add_noise_eta_zero_adds_nothing():
    grads = random_trees(13, shapes={"matrix": (2, 3)})  # few leaves: random bits compile slowly
    got = run(optjax.add_noise(eta=0.0), grads)
    assert_trajectory(got, leafwise(scale_spec, grads, step_size=1.0), rtol=0, atol=0)


# ---------------------------------------------------------- checks shared by every primitive


def _schedule_half(count):
    return jnp.where(count < 3, 1.0, 0.5)


ALL = {
    "scale": lambda: optjax.scale(0.5),
    "scale_by_learning_rate": lambda: optjax.scale_by_learning_rate(0.1),
    "scale_by_learning_rate_schedule": lambda: optjax.scale_by_learning_rate(_decaying),
    "scale_by_schedule": lambda: optjax.scale_by_schedule(_schedule_half),
    "trace": lambda: optjax.trace(0.9),
    "trace_nesterov": lambda: optjax.trace(0.9, nesterov=True),
    "ema": lambda: optjax.ema(0.9),
    "ema_biased": lambda: optjax.ema(0.9, debias=False),
    "adam": lambda: optjax.scale_by_adam(),
    "adam_nesterov": lambda: optjax.scale_by_adam(eps_root=1e-8, nesterov=True),
    "amsgrad": lambda: optjax.scale_by_amsgrad(),
    "amsgrad_raw_nu": lambda: optjax.scale_by_amsgrad(max_of_raw_nu=True),
    "adamax": lambda: optjax.scale_by_adamax(eps_in_max=False),
    "adamax_eps_in_max": lambda: optjax.scale_by_adamax(eps_in_max=True),
    "rms": lambda: optjax.scale_by_rms(),
    "rms_torch": lambda: optjax.scale_by_rms(eps_in_sqrt=False, bias_correction=True),
    "stddev": lambda: optjax.scale_by_stddev(),
    "stddev_torch": lambda: optjax.scale_by_stddev(eps_in_sqrt=False, initial_scale=1.0),
    "rss": lambda: optjax.scale_by_rss(),
    "rss_torch": lambda: optjax.scale_by_rss(0.0, 1e-10, eps_in_sqrt=False),
    "adadelta": lambda: optjax.scale_by_adadelta(),
    "lion": lambda: optjax.scale_by_lion(),
    "radam": lambda: optjax.scale_by_radam(b2=0.9, threshold=4.0),
    "factored_rms": lambda: optjax.scale_by_factored_rms(min_dim_size_to_factor=2),
    "param_block_rms": lambda: optjax.scale_by_param_block_rms(),
    "clip": lambda: optjax.clip(0.5),
    "clip_by_global_norm": lambda: optjax.clip_by_global_norm(1.0),
    "clip_by_block_rms": lambda: optjax.clip_by_block_rms(0.5),
    "add_decayed_weights": lambda: optjax.add_decayed_weights(0.1),
    "add_noise": lambda: optjax.add_noise(0.1),
}


# One compiled update per primitive, shared by the dtype and step-count tests below: a tree of
# float32 and bfloat16 leaves, the step count saturated or not, all take the same executable.
_JITTED = {name: CountingJit(make()) for name, make in ALL.items()}
_MIXED = {"f32": (2, 3), "bf16": (3,)}


def _mixed_trees(seed, steps):
    trees = random_trees(seed, steps, shapes=_MIXED)
    return [{"f32": t["f32"], "bf16": t["bf16"].astype(jnp.bfloat16)} for t in trees]


# State fields held in float32 for bf16 and fp16 parameters (second moments, slow averages;
# centered RMSprop's mean too, which its variance subtracts).
_WIDE_FIELDS = {"nu", "nu_max", "e_g", "e_x", "sum_of_squares", "v_row", "v_col", "v", "average"}


@pytest.mark.parametrize("name", sorted(ALL))
def test_dtypes_kept_and_traced_once(name):
    jitted = _JITTED[name]
    (params,) = _mixed_trees(14, steps=1)
    init_state = jitted.tx.init(params)
    got = run(jitted.tx, _mixed_trees(15, steps=3), params=params, jitted=jitted)  # one trace
    dtypes = {"f32": jnp.dtype(jnp.float32), "bf16": jnp.dtype(jnp.bfloat16)}
    for u, state in got:
        for key, leaf in u.items():
            assert leaf.dtype == dtypes[key]
            assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
        assert jax.tree.map(jnp.result_type, state) == jax.tree.map(jnp.result_type, init_state)
        # Every float state leaf kept for the bf16 parameter is bf16, and likewise for float32,
        # but second moments and slow averages: float32 (tests/test_low_precision.py).
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                (key,) = {k.key for k in path if isinstance(k, jax.tree_util.DictKey)}
                fields = {getattr(k, "name", None) for k in path}
                wide = _WIDE_FIELDS | (
                    {"mu"} if isinstance(state, optjax.ScaleByRStdDevState) else set()
                )
                want = jnp.dtype(jnp.float32) if fields & wide else dtypes[key]
                assert leaf.dtype == want, jax.tree_util.keystr(path)
        if has_count(state):
            assert state.count.dtype == jnp.int32 and state.count.shape == ()


COUNTED = sorted(name for name in ALL if has_count(ALL[name]().init(jnp.zeros(2))))


@pytest.mark.parametrize("name", COUNTED)
def test_step_count_saturates_at_int32_max(name):
    jitted = _JITTED[name]
    (params,) = _mixed_trees(16, steps=1)
    state = jitted.tx.init(params)
    assert state.count.dtype == jnp.int32
    saturated = state._replace(count=jnp.asarray(INT32_MAX, jnp.int32))
    for u, state in run(jitted.tx, _mixed_trees(17, 2), params, saturated, jitted):
        assert state.count.dtype == jnp.int32 and int(state.count) == INT32_MAX  # no wrap
        for leaf in jax.tree.leaves(u):
            assert np.all(np.isfinite(np.asarray(leaf, np.float32))), leaf


def _dtypes(tree):
    return {leaf.dtype for leaf in jax.tree.leaves(tree)}


def test_mu_dtype_and_accumulator_dtype_are_honoured():
    p = {"matrix": jnp.zeros((2, 3))}
    bf16 = jnp.bfloat16
    cases = [
        (optjax.scale_by_adam(mu_dtype=bf16), "mu", "nu"),
        (optjax.scale_by_amsgrad(mu_dtype=bf16), "mu", "nu"),
        (optjax.scale_by_lion(mu_dtype=bf16), "mu", None),
        (optjax.trace(0.9, accumulator_dtype=bf16), "trace", None),
        (optjax.ema(0.9, accumulator_dtype=bf16), "ema", None),
    ]
    for tx, low, full in cases:
        u, state = run(tx, random_trees(18, steps=2, shapes={"matrix": (2, 3)}), params=p)[-1]
        assert _dtypes(getattr(state, low)) == {jnp.dtype(bf16)}
        if full:
            assert _dtypes(getattr(state, full)) == {jnp.dtype(jnp.float32)}
        assert _dtypes(u) == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: optjax.scale(float("nan")), "step_size"),
        (lambda: optjax.scale_by_learning_rate(-0.1), "learning_rate"),
        (lambda: optjax.scale_by_learning_rate(float("inf")), "learning_rate"),
        (lambda: optjax.scale_by_schedule(0.1), "step_size_fn"),
        (lambda: optjax.trace(decay=1.5), "decay"),
        (lambda: optjax.ema(decay=1.0), "decay"),
        (lambda: optjax.scale_by_adam(b1=1.0), "b1"),
        (lambda: optjax.scale_by_adam(b2=-0.1), "b2"),
        (lambda: optjax.scale_by_adam(eps=-1e-8), "eps"),
        (lambda: optjax.scale_by_adam(eps_root=-1.0), "eps_root"),
        (lambda: optjax.scale_by_amsgrad(b2=1.0), "b2"),
        (lambda: optjax.scale_by_adamax(b1=-0.5), "b1"),
        (lambda: optjax.scale_by_rms(decay=1.0), "decay"),
        (lambda: optjax.scale_by_rms(initial_scale=-1.0), "initial_scale"),
        (lambda: optjax.scale_by_stddev(eps=-1.0), "eps"),
        (lambda: optjax.scale_by_rss(initial_accumulator_value=-0.1), "initial_accumulator_value"),
        (lambda: optjax.scale_by_adadelta(rho=1.0), "rho"),
        (lambda: optjax.scale_by_lion(b2=1.0), "b2"),
        (lambda: optjax.scale_by_radam(b1=2.0), "b1"),
        (lambda: optjax.scale_by_factored_rms(min_dim_size_to_factor=0), "min_dim_size_to_factor"),
        (lambda: optjax.scale_by_factored_rms(decay_rate=-0.8), "decay_rate"),
        (lambda: optjax.scale_by_param_block_rms(min_scale=0.0), "min_scale"),
        (lambda: optjax.clip(-1.0), "max_delta"),
        (lambda: optjax.clip_by_global_norm(-1.0), "max_norm"),
        (lambda: optjax.clip_by_block_rms(0.0), "threshold"),
        (lambda: optjax.add_decayed_weights(-0.1), "weight_decay"),
        (lambda: optjax.add_noise(eta=-1.0), "eta"),
        (lambda: optjax.add_noise(gamma=-1.0), "gamma"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        make()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jitted"])
def test_scheduled_weight_decay_counts_every_step_even_where_it_is_zero(jit):
    """A schedule at 0 (known to be 0 when run eagerly, where the step skips its pass over the
    params) still moves the count: the next step reads wd(1)."""
    tx = optjax.add_decayed_weights(lambda n: jnp.where(n == 0, 0.0, 0.5))
    update = jax.jit(tx.update) if jit else tx.update
    p, g = jnp.ones(2), jnp.ones(2)
    u0, state = update(g, tx.init(p), p)
    u1, state = update(g, state, p)
    np.testing.assert_array_equal(u0, [1.0, 1.0])
    np.testing.assert_array_equal(u1, [1.5, 1.5])
    assert int(state.count) == 2
