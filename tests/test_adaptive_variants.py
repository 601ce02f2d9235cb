"""AdaBelief, Adan, Yogi, NovoGrad and SM3 (primitives and optimizers) against optax 0.2.8 step by
step, in float64 and float32, and the places where optjax is right where optax is not:

- optax's Adan weighs the gradient difference by 1 - b2 where the paper and the authors' code
  weigh it by b2 (the comparisons with optax run at b2 = 0.5, where the two agree; the defaults
  are checked against a NumPy transcription of the authors' algorithm);
- optax's SM3 fails on a scalar leaf, and with the ``momentum=None`` its docstring offers;
- optax's NovoGrad fails when ``update`` is called without params, even with no weight decay.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax
from optjax import flat
from optjax.optimizers import adaptive_variants as optimizers
from optjax.transforms import adaptive_variants as transforms

# To merge into tests/test_conformance.py's ROWS.

STEPS = 6
SHAPES = {"scalar": (), "conv": (4, 3, 2)}  # SM3: a 1-D and a 0-d leaf are tested on their own


def _make(lib, name, kwargs):
    module = (optimizers if hasattr(optimizers, name) else transforms) if lib is optjax else optax
    return getattr(module, name)(**kwargs)


def _problem(name, steps=STEPS, seed=0):
    """Params and gradients, drawn in float32 (so that a float64 run of the same numbers is the
    exact trajectory of the float32 one); no scalar leaf for SM3, which optax cannot take."""
    rng = np.random.default_rng(seed)
    shapes = {k: s for k, s in SHAPES.items() if not (name.endswith("sm3") and s == ())}
    draw = lambda: {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    return draw(), [draw() for _ in range(steps)]


def _as_float64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64), tree)


def _trajectory(tx, apply, params, grads, *, jit=False):
    """The updates and params of each step, as NumPy leaves (float64, complex128 if complex).

    Eager by default: the trajectories here are a few steps on small trees, and eager ops are
    compiled once per shape for the whole file, where a jitted step compiles per optimizer."""

    def step(g, state, params):
        updates, state = tx.update(g, state, params)
        return updates, state, apply(params, updates)

    step = jax.jit(step) if jit else step
    state, out = tx.init(params), []
    for g in grads:
        updates, state, params = step(g, state, params)
        out.append(jax.tree.map(_as_wide_numpy, (updates, params)))
    return out


def _as_wide_numpy(x):
    return np.asarray(x, np.complex128 if jnp.iscomplexobj(x) else np.float64)


def _run(lib, name, kwargs, params, grads):
    """``lib.<name>(**kwargs)``'s trajectory: optjax under the tests' strict dtype promotion,
    optax under the standard promotion it needs."""
    if lib is optjax:
        return _trajectory(_make(lib, name, kwargs), lib.apply_updates, params, grads)
    with jax.numpy_dtype_promotion("standard"):
        return _trajectory(_make(lib, name, kwargs), lib.apply_updates, params, grads)


@functools.cache
def _float64_run(lib, name, kwargs_items):
    params, grads = _problem(name)
    with jax.enable_x64(True):
        return _run(lib, name, dict(kwargs_items), _as_float64(params), _as_float64(grads))


def _assert_close(ours, theirs, rtol):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        # An atol of rtol times the leaf's scale, for entries that pass through zero.
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


def _worst_error(trajectory, exact):
    """The largest error of any entry, relative to its leaf's scale at that step."""
    pairs = zip(jax.tree.leaves(trajectory), jax.tree.leaves(exact), strict=True)
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in pairs)


# (name, kwargs): optjax.<name>(**kwargs) against optax.<name>(**kwargs), default and other
# arguments of each optimizer, and the primitives' arguments the optimizers do not pass. Adan at
# b2 = 0.5, where optax's weight 1 - b2 on the gradient difference equals the paper's b2.
CASES = [
    ("adabelief", dict(learning_rate=1e-2)),
    ("adabelief", dict(learning_rate=3e-3, b1=0.8, b2=0.99, eps=1e-8, eps_root=0.0, nesterov=True)),
    ("adan", dict(learning_rate=1e-2, b2=0.5)),
    (
        "adan",
        dict(learning_rate=1e-2, b1=0.9, b2=0.5, b3=0.95, eps=1e-6, eps_root=0.0, weight_decay=0.1),
    ),
    ("yogi", dict(learning_rate=1e-2)),
    ("yogi", dict(learning_rate=1e-2, b1=0.5, b2=0.9, eps=1e-4)),
    ("scale_by_yogi", dict(eps_root=1e-6, initial_accumulator_value=0.1)),
    ("novograd", dict(learning_rate=1e-2)),
    (
        "novograd",
        dict(learning_rate=1e-2, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-6, weight_decay=0.1),
    ),
    ("sm3", dict(learning_rate=0.1)),
    ("sm3", dict(learning_rate=0.1, momentum=0.5)),
    ("scale_by_sm3", dict(b1=0.5, b2=0.9, eps=1e-4)),
]
DEFAULTS = [CASES[i] for i in (0, 2, 4, 7, 9)]  # each optimizer's first case


def _case_id(case):
    name, kwargs = case
    return name + "(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


@pytest.mark.parametrize("name,kwargs", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_optax_step_by_step_in_float64(name, kwargs):
    items = tuple(kwargs.items())
    _assert_close(_float64_run(optjax, name, items), _float64_run(optax, name, items), rtol=1e-6)


@pytest.mark.parametrize("name,kwargs", DEFAULTS, ids=[_case_id(c) for c in DEFAULTS])
def test_float32_is_at_least_as_close_to_float64_as_optax(name, kwargs):
    params, grads = _problem(name)
    errors = {
        lib.__name__: _worst_error(
            _run(lib, name, kwargs, params, grads), _float64_run(lib, name, tuple(kwargs.items()))
        )
        for lib in (optjax, optax)
    }
    assert errors["optjax"] < 1e-5, errors
    # The same formulas, rounded in another order here and there (the bias corrections more
    # closely): no worse than optax's float32 run beyond a float32 ulp or so.
    assert errors["optjax"] <= errors["optax"] + 2e-7, errors


# ----------------------------------------------------------------------------------------- Adan


def adan_spec(gs, params, lr, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8, wd=0.0):
    """Xie et al. 2022, Algorithm 1, as the authors' code runs it (decays b = 1 - beta, bias
    corrections, the difference weighted by b2), with decoupled weight decay (no_prox=True)."""
    m = v = n = np.zeros_like(gs[0])
    g_prev, p = gs[0], params
    for t, g in enumerate(gs, start=1):
        d = g - g_prev
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * d
        n = b3 * n + (1 - b3) * (g + b2 * d) ** 2
        direction = m / (1 - b1**t) + b2 * v / (1 - b2**t)
        u = direction / (np.sqrt(n / (1 - b3**t) + eps_root) + eps)
        p = p - lr * (u + wd * p)
        g_prev = g
        yield p


@pytest.mark.parametrize("kwargs", [{}, dict(b1=0.9, b2=0.8, b3=0.95, weight_decay=0.1)], ids=str)
def test_adan_matches_the_papers_algorithm_in_float64(kwargs):
    rng = np.random.default_rng(3)
    params = rng.normal(size=7)
    grads = [rng.normal(size=7) for _ in range(STEPS)]
    spec_kwargs = {("wd" if k == "weight_decay" else k): v for k, v in kwargs.items()}
    with jax.enable_x64(True):
        tx = optimizers.adan(0.1, **kwargs)
        p, update = jnp.asarray(params), jax.jit(tx.update)
        state = tx.init(p)
        for g, expected in zip(grads, adan_spec(grads, params, 0.1, **spec_kwargs)):
            u, state = update(jnp.asarray(g), state, p)
            p = optjax.apply_updates(p, u)
            np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_adan_optax_weighs_the_gradient_difference_by_one_minus_b2():
    # optax 0.2.8's scale_by_adan uses (1 - b2) (g - g_prev) where the paper's (1 - beta_2) is
    # b2 in optax's own parametrization (its v_t = b2 v_{t-1} + (1 - b2) d_t): at the default
    # b2 = 0.92 the difference gets 0.08 instead of 0.92. The first step, with no difference
    # yet, agrees; the later ones do not.
    rng = np.random.default_rng(4)
    params = rng.normal(size=7)
    grads = [rng.normal(size=7) for _ in range(3)]
    with jax.enable_x64(True):
        ours = _run(optjax, "adan", dict(learning_rate=0.1, eps_root=0.0), params, grads)
        theirs = _run(optax, "adan", dict(learning_rate=0.1, eps_root=0.0), params, grads)
    ours, theirs = [p for _, p in ours], [p for _, p in theirs]
    paper = list(adan_spec(grads, params, 0.1, eps_root=0.0))
    optax_form = list(_adan_with_difference_weight(grads, params, 0.1, weight=1 - 0.92))
    np.testing.assert_allclose(ours, paper, rtol=1e-6)
    np.testing.assert_allclose(theirs, optax_form, rtol=1e-6)
    np.testing.assert_allclose(theirs[0], paper[0], rtol=1e-6)
    assert np.max(np.abs(theirs[2] - paper[2])) > 1e-3


def _adan_with_difference_weight(gs, params, lr, weight, b1=0.98, b2=0.92, b3=0.99, eps=1e-8):
    m = v = n = np.zeros_like(gs[0])
    g_prev, p = gs[0], params
    for t, g in enumerate(gs, start=1):
        d = g - g_prev
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * d
        n = b3 * n + (1 - b3) * (g + weight * d) ** 2
        u = (m / (1 - b1**t) + weight * v / (1 - b2**t)) / (np.sqrt(n / (1 - b3**t)) + eps)
        p, g_prev = p - lr * u, g
        yield p


# ------------------------------------------------------------------------------------------ SM3


def test_sm3_scalar_leaf_optax_raises_index_error():
    # optax 0.2.8 keeps no accumulator for a 0-d leaf and then reads its first one.
    with pytest.raises(IndexError):
        tx = optax.sm3(0.1)
        tx.update(jnp.float32(2.0), tx.init(jnp.float32(1.0)))
    # optjax gives a scalar one accumulator, as it gives a vector one per element: Adagrad.
    tx = optimizers.sm3(0.1)
    gs = [2.0, -1.0, 0.5]
    scalar, vector = tx.init(jnp.float32(1.0)), tx.init(jnp.ones(1))
    m, s = 0.0, 0.0
    for g in gs:
        u_scalar, scalar = tx.update(jnp.float32(g), scalar)
        u_vector, vector = tx.update(jnp.full(1, g, jnp.float32), vector)
        s += g * g
        m = 0.9 * m + 0.1 * g / np.sqrt(s + 1e-8)
        assert u_scalar.shape == ()
        np.testing.assert_allclose(u_scalar, -0.1 * m, rtol=1e-6)
        np.testing.assert_allclose(u_vector, u_scalar[None], rtol=1e-6)


def test_sm3_momentum_none_optax_raises_type_error():
    # optax 0.2.8's sm3 documents momentum=None as "no momentum", then multiplies by None.
    with pytest.raises(TypeError):
        tx = optax.sm3(0.1, momentum=None)
        tx.update(jnp.ones(3), tx.init(jnp.ones(3)))
    tx = optimizers.sm3(0.1, momentum=None)
    state, g = tx.init(jnp.ones(3)), jnp.array([3.0, -4.0, 0.0])
    u, state = tx.update(g, state)
    np.testing.assert_allclose(u, [-0.1, 0.1, 0.0], rtol=1e-6)  # -lr g / sqrt(g^2), 0/0 = 0


def sm3_spec(gs, b1=0.9, b2=1.0, eps=1e-8):
    """SM3-II (Anil et al. 2019) on a matrix: one accumulator per row and per column."""
    rows, cols = np.zeros(gs[0].shape[0]), np.zeros(gs[0].shape[1])
    m = np.zeros_like(gs[0])
    weight = 1.0 if b2 == 1 else 1 - b2
    for g in gs:
        nu = b2 * np.minimum(rows[:, None], cols[None, :]) + weight * g**2
        m = b1 * m + (1 - b1) * np.where(nu > 0, g / np.sqrt(nu + eps), 0.0)
        rows, cols = nu.max(axis=1), nu.max(axis=0)
        yield m


@pytest.mark.parametrize("kwargs", [{}, dict(b1=0.5, b2=0.9, eps=1e-4)], ids=str)
def test_sm3_matches_the_papers_algorithm(kwargs):
    rng = np.random.default_rng(5)
    gs = [rng.normal(size=(4, 3)) * [[1.0], [0.1], [3.0], [1.0]] for _ in range(STEPS)]
    with jax.enable_x64(True):
        tx = transforms.scale_by_sm3(**kwargs)
        state, update = tx.init(jnp.zeros((4, 3))), jax.jit(tx.update)
        for g, expected in zip(gs, sm3_spec(gs, **kwargs)):
            u, state = update(jnp.asarray(g), state)
            np.testing.assert_allclose(u, expected, rtol=1e-6)
        assert [a.shape for a in state.mu] == [(4,), (3,)]


# ------------------------------------------------------------------------------------- NovoGrad


def test_novograd_without_params_optax_raises_type_error():
    # optax 0.2.8 adds weight_decay * params even when weight_decay is 0, so an update called
    # without params (as optax's own chain allows) fails.
    with pytest.raises(TypeError):
        tx = optax.novograd(0.1)
        tx.update(jnp.ones(3), tx.init(jnp.ones(3)))
    tx = optimizers.novograd(0.1, eps=0.0)
    u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
    np.testing.assert_allclose(u, [-0.06, -0.08], rtol=1e-6)
    decayed = optimizers.novograd(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="needs params"):
        decayed.update(jnp.ones(2), decayed.init(jnp.zeros(2)))


def test_novograd_keeps_one_second_moment_per_leaf():
    params = {"w": jnp.ones((3, 4), jnp.bfloat16), "b": jnp.ones(4, jnp.bfloat16)}
    state = transforms.scale_by_novograd().init(params)
    assert jax.tree.map(lambda v: (v.shape, v.dtype), state.nu) == {
        "w": ((), jnp.float32),
        "b": ((), jnp.float32),
    }


# ---------------------------------------------------------------------------- numerics, layouts


# The second moments, by their fields' names (tests/test_low_precision.py runs every conformance
# row on bf16 and fp16 parameters against float32).
SECOND_MOMENTS = {
    "scale_by_belief": "nu",
    "scale_by_adan": "n",
    "scale_by_yogi": "nu",
    "scale_by_novograd": "nu",
    "scale_by_sm3": "mu",
}


@pytest.mark.parametrize("name", list(SECOND_MOMENTS))
def test_bf16_params_keep_float32_second_moments(name):
    tx = getattr(transforms, name)()
    params = {"w": jnp.ones((3, 2), jnp.bfloat16), "s": jnp.ones((), jnp.bfloat16)}
    grads = jax.tree.map(lambda p: p * 0.5, params)
    updates, state = jax.eval_shape(lambda: tx.update(grads, tx.init(params), params))
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    moments = jax.tree.leaves(getattr(state, SECOND_MOMENTS[name]))
    assert moments and all(m.dtype == jnp.float32 for m in moments)


MAX_COUNT = {
    "scale_by_belief": "count",
    "scale_by_adan": "t",
    "scale_by_yogi": "count",
    "scale_by_novograd": "count",
}


@pytest.mark.parametrize("name", list(MAX_COUNT))
def test_saturated_step_count_stays_finite(name):
    tx = getattr(transforms, name)()
    params, _ = _problem(name)
    state = tx.init(params)
    state = state._replace(**{MAX_COUNT[name]: jnp.int32(np.iinfo(np.int32).max)})
    for _ in range(2):
        u, state = tx.update(jax.tree.map(lambda p: p * 0.5, params), state, params)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
    assert int(getattr(state, MAX_COUNT[name])) == np.iinfo(np.int32).max


def test_novograd_flat_layout_matches_tree():
    # Per-leaf norms on the buffers, and the weight decay reading the flat params
    # (tests/test_flat.py runs every conformance row flat, without weight decay). Odd sizes, so
    # the buffer has padding.
    params = {
        "a": jnp.linspace(-1, 1, 7),
        "b": jnp.linspace(0.5, 2, 10).reshape(2, 5),
        "s": jnp.float32(0.3),
    }
    rng = np.random.default_rng(6)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(3)
    ]
    tx = optimizers.novograd(0.1, weight_decay=0.1)
    tree_run = _trajectory(tx, optjax.apply_updates, params, grads, jit=True)
    flat_tx = flat.flat_transform(tx)
    flat_run = _trajectory(flat_tx, optjax.apply_updates, params, grads, jit=True)
    _assert_close(flat_run, tree_run, rtol=1e-6)
    state = flat_tx.init(flat.FlatLayout.of(params).flatten(params))
    assert [v.shape for v in state[0].nu] == [(3,)]  # one per leaf of the buffer


COMPLEX = [
    ("adabelief", dict(learning_rate=0.1)),
    ("adan", dict(learning_rate=0.1)),
    ("scale_by_yogi", dict(initial_accumulator_value=0.0)),  # a real m_0 = 1e-6 would not turn
    ("novograd", dict(learning_rate=0.1, weight_decay=0.1)),
    ("sm3", dict(learning_rate=0.1)),
]


@pytest.mark.parametrize("name,kwargs", COMPLEX, ids=[name for name, _ in COMPLEX])
def test_complex_leaves_square_the_modulus(name, kwargs):
    # With |g|^2 where the papers square, each step commutes with a rotation of the complex
    # plane: params and gradients turned by a phase give the real run's updates turned by it.
    # (g^2 in place of |g|^2 would not; optax refuses complex leaves in SM3.)
    params, grads = _problem(name, steps=3)
    turn = lambda tree: jax.tree.map(lambda x: x.astype(jnp.complex64) * np.exp(0.7j), tree)
    real = _run(optjax, name, kwargs, params, grads)
    rotated = _run(optjax, name, kwargs, turn(params), [turn(g) for g in grads])
    _assert_close(rotated, jax.tree.map(lambda x: x * np.exp(0.7j), real), rtol=2e-5)


# ------------------------------------------------------------------------- bad hyperparameters

NOT_NUMBERS = [float("inf"), float("nan"), 1e39, "0.9", [0.9], True, None]
DECAY = [*NOT_NUMBERS, -0.1, 1.0, 1.5]
NONNEGATIVE = [*NOT_NUMBERS, -1.0, -1e-30]
RATE = [-1.0, float("nan"), "0.1", None]

BAD = [
    (
        transforms.scale_by_belief,
        {},
        dict(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE),
    ),
    (transforms.scale_by_adan, {}, dict(b1=DECAY, b2=DECAY, b3=DECAY, eps=NONNEGATIVE)),
    (
        transforms.scale_by_yogi,
        {},
        dict(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, initial_accumulator_value=NONNEGATIVE),
    ),
    (
        transforms.scale_by_novograd,
        {},
        dict(b1=DECAY, b2=DECAY, eps_root=NONNEGATIVE, weight_decay=NONNEGATIVE),
    ),
    (
        transforms.scale_by_sm3,
        {},
        dict(b1=DECAY, b2=[*NOT_NUMBERS, -0.1, 1.5], eps=NONNEGATIVE),
    ),
    (optimizers.adabelief, dict(learning_rate=0.1), dict(learning_rate=RATE, eps=NONNEGATIVE)),
    (optimizers.adan, dict(learning_rate=0.1), dict(b3=DECAY, weight_decay=NONNEGATIVE)),
    (optimizers.yogi, dict(learning_rate=0.1), dict(learning_rate=RATE, b1=DECAY)),
    (optimizers.novograd, dict(learning_rate=0.1), dict(eps=NONNEGATIVE, weight_decay=NONNEGATIVE)),
    (
        optimizers.sm3,
        dict(learning_rate=0.1),
        dict(learning_rate=RATE, momentum=[v for v in DECAY if v is not None]),
    ),
]


@pytest.mark.parametrize("make,base,arguments", BAD, ids=[b[0].__name__ for b in BAD])
def test_bad_hyperparameters_raise_naming_the_argument(make, base, arguments):
    for argument, values in arguments.items():
        for bad in values:
            with pytest.raises(ValueError) as error:
                make(**{**base, argument: bad})
            message = str(error.value)
            assert message.startswith(f"{argument} must be "), message
            assert f"{argument}={bad!r}" in message, message


def test_sm3_accepts_b2_one_and_momentum_none():
    transforms.scale_by_sm3(b2=1.0)
    optimizers.sm3(0.1, momentum=None)


def test_traced_hyperparameters_are_accepted():
    # Built inside a trace (jit, vmap, inject_hyperparams): nothing can be checked, nothing fails.
    params = {"w": jnp.ones(3), "s": jnp.ones(())}

    def step(v):
        txs = [
            optimizers.adabelief(v, b1=v, eps=v),
            optimizers.adan(v, b2=v, b3=v, weight_decay=v),
            optimizers.yogi(v, b2=v),
            optimizers.novograd(v, b2=v, weight_decay=v),
            transforms.scale_by_sm3(b1=v, b2=v),
            transforms.scale_by_yogi(initial_accumulator_value=v),
        ]
        return [tx.update(params, tx.init(params), params)[0] for tx in txs]

    jax.make_jaxpr(step)(jnp.float32(0.5))
