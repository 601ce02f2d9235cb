"""Complex parameters (complex64): every optimizer of the conformance table steps them as optax
documents for its adaptive optimizers, squaring the modulus |g|^2 where the papers square g.

Two properties pin that down without a second implementation as oracle:
- a complex run whose parameters and gradients are real (zero imaginary parts) is the real run
  exactly, with imaginary parts that stay 0;
- rotating the parameters and every gradient by one phase e^{i theta} rotates the whole
  trajectory by it (|g|^2, sums of |g|^2 and sign(g) = g / |g| are unchanged by a phase; g^2 is
  not, so a transform that squares g where it means |g|^2 breaks this).
The torch.optim presets refuse complex leaves: torch.optim steps a complex tensor as a pair of
real ones (``torch.view_as_real``), whose second moments are per component, not |g|^2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS

import optjax
from optjax.tree import compute_dtype

STEPS = 4
PHASE = np.exp(0.7j)
CLIPPING = {
    "clip_by_global_norm": lambda lr: optjax.chain(optjax.clip_by_global_norm(0.5), optjax.sgd(lr)),
    "clip_by_block_rms": lambda lr: optjax.chain(optjax.clip_by_block_rms(0.1), optjax.sgd(lr)),
    "adafactor_factored": lambda lr: optjax.adafactor(lr, min_dim_size_to_factor=2),
}
# noisy_sgd adds noise drawn in each leaf's dtype (complex noise for a complex leaf): a random
# step has no real run to embed and does not commute with a phase, so neither property applies.
STOCHASTIC = {"noisy_sgd"}
TABLE = {
    name: row.make
    for name, row in ROWS.items()
    if not name.startswith("torch.") and name not in STOCHASTIC
}
TABLE |= CLIPPING


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,)), "s": rng.normal(size=())}
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape), params) for _ in range(STEPS)]
    return params, grads


def _trajectory(tx, params, grads):
    """Params after each step, in one jitted scan over the stacked gradients."""

    def step(carry, g):
        p, state = carry
        u, state = tx.update(g, state, p)
        p = optjax.apply_updates(p, u)
        return (p, state), p

    stacked = jax.tree.map(lambda *gs: jnp.stack(gs), *grads)
    return jax.lax.scan(step, (params, tx.init(params)), stacked)[1]


@pytest.mark.parametrize("name", TABLE)
def test_complex_steps_embed_the_real_ones_and_commute_with_a_phase(name):
    params, grads = _problem()
    tx = TABLE[name](1e-2)
    as_type = lambda tree, dtype, factor=1.0: jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x) * factor, dtype), tree
    )

    @jax.jit
    def runs():
        real = _trajectory(tx, as_type(params, jnp.float32), as_type(grads, jnp.float32))
        embedded = _trajectory(tx, as_type(params, jnp.complex64), as_type(grads, jnp.complex64))
        rotated = _trajectory(
            tx, as_type(params, jnp.complex64, PHASE), as_type(grads, jnp.complex64, PHASE)
        )
        return real, embedded, rotated

    real, embedded, rotated = runs()
    for key in params:
        assert embedded[key].dtype == rotated[key].dtype == jnp.complex64
        np.testing.assert_allclose(embedded[key].real, real[key], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(embedded[key].imag, 0.0)
        np.testing.assert_allclose(rotated[key], embedded[key] * PHASE, rtol=1e-4, atol=1e-5)


def test_clip_by_global_norm_scales_a_complex_gradient_by_its_modulus():
    tx = optjax.clip_by_global_norm(1.0)
    got = tx.update(jnp.array([3 + 4j, 0], jnp.complex64), tx.init(None))[0]
    np.testing.assert_allclose(got, [0.6 + 0.8j, 0], rtol=1e-6)


@pytest.mark.parametrize("name", [name for name in ROWS if name.startswith("torch.")])
def test_torch_presets_refuse_complex_leaves_naming_the_leaf(name):
    tx = ROWS[name].make(1e-2)
    params = {"w": jnp.ones(3), "z": jnp.ones(2, jnp.complex64)}
    with pytest.raises(ValueError, match=r"params\['z'\] is complex64: torch\.optim"):
        tx.init(params)


_REAL_AND_COMPLEX = ["bfloat16", "float16", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("second", [*_REAL_AND_COMPLEX, "int32", "bool"])
@pytest.mark.parametrize("first", _REAL_AND_COMPLEX)
def test_compute_dtype_keeps_the_widest_precision_and_complexness(first, second):
    """The dtype arithmetic runs in: NumPy's promotion of the two with float32 as the floor
    (bf16 and fp16 count as float16 here; integers and bools add nothing)."""
    as_numpy = {"bfloat16": np.float16, "int32": np.float32, "bool": np.float32}
    want = np.result_type(np.float32, *(as_numpy.get(d, d) for d in (first, second)))
    assert compute_dtype(first, second) == compute_dtype(second, first) == want
