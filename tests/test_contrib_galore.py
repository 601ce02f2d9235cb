"""GaLore (scale_by_galore, galore) against optax 0.2.8 step by step on the same gradients, in
float64 and float32; its projection against NumPy's SVD; the places where optax is wrong (a
refresh whose singular vectors LAPACK flips turns the carried momentum around; float64 matrices
projected in float32; complex matrices); the flat layout; hyperparameter validation.

Singular vectors are defined up to their sign, which LAPACK picks. A step of GaLore does not
depend on it within a projection period (P base(P^T G) is invariant under P -> -P for a base
optimizer that commutes with sign flips: Adam, RMSprop, momentum), but the moments carried
across a refresh do. optax keeps LAPACK's sign and optjax aligns each refreshed vector with the
one it replaces, so the two are compared on runs where the sign cannot matter: Adam with one SVD
(update_proj_gap longer than the run), and refreshes under RMSprop, whose state is of squares.
Adam across refreshes is compared with a NumPy oracle that aligns signs the same way, and the
projectors with NumPy's singular vectors up to sign (P P^T, and |<p_i, u_i>| = 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import assert_trajectories_close, constant, problem, run, worst_error

import optjax
from optjax import flat
from optjax.contrib._galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore

SHAPES = {"tall": (4, 3), "wide": (2, 3)}  # few leaves: little to compile


def run_jitted(tx, params, grads, *, states: bool = False) -> list:
    """optax_compare.run's ``[(updates, params)]`` (``(updates, params, state)`` with
    ``states``), as one jitted scan over the steps: the projector's SVD sits in a lax.cond,
    which an eager run would compile again at every step."""
    is_optax = type(tx).__module__.startswith("optax")
    apply = optax.apply_updates if is_optax else optjax.apply_updates

    def trajectory(params, grads):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            params = apply(params, updates)
            return (params, state), (updates, params, state) if states else (updates, params)

        return jax.lax.scan(step, (params, tx.init(params)), grads)[1]

    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    with jax.numpy_dtype_promotion("standard" if is_optax else "strict"):
        out = jax.jit(trajectory)(params, stacked)
    return [jax.tree.map(lambda x, t=t: np.asarray(x[t]), out) for t in range(len(grads))]


def compare_jitted(ours, theirs, shapes, steps=4):
    """optax_compare.compare_with_optax on jitted runs: agreement with optax in float64, and
    optjax's float32 run at least as close to the float64 one as optax's."""
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, steps, shapes=shapes)
        exact = run_jitted(ours(), params, grads)
        # 1e-5, not 1e-6: optax projects float64 gradients in float32 (see the test of that
        # below); the NumPy oracle test holds optjax's float64 steps to 1e-9.
        assert_trajectories_close(exact, run_jitted(theirs(), params, grads), rtol=1e-5)
    params, grads = problem(jnp.float32, steps, shapes=shapes)
    ours32 = worst_error(run_jitted(ours(), params, grads), exact)
    theirs32 = worst_error(run_jitted(theirs(), params, grads), exact)
    assert ours32 <= theirs32 + float(jnp.finfo(jnp.float32).eps), (ours32, theirs32)


def matrices_only(params):
    return jax.tree.map(lambda p: p.ndim == 2, params)


def transposed(params):  # a function of params giving the dimension numbers
    return jax.tree.map(lambda p: GaLoreDimensionNumbers(-1, 0) if p.ndim == 2 else None, params)


# Refreshed every 2 steps under RMSprop (its state is of squares, so the signs LAPACK picks do
# not matter: see the module doc), with the cube projected as a (2*2) x 3 matrix.
CUBE_AS_MATRIX = {
    "vector": None,  # not projected: the base optimizer steps on it whole, without scale
    "tall": GaLoreDimensionNumbers(),
    "cube": GaLoreDimensionNumbers(reduction_axis=(0, 2), output_axis=1),
}
NON_DEFAULT = dict(
    rank=1,
    update_proj_gap=2,
    scale=0.5,
    weight_decay=0.1,
    mask=matrices_only,
    weight_dimension_numbers=CUBE_AS_MATRIX,
)


def test_galore_matches_optax_in_float64_and_is_as_close_in_float32(standard_promotion):
    # One SVD (update_proj_gap=200), Adam: its sign cannot matter.
    compare_jitted(lambda: galore(0.1), lambda: optax.contrib.galore(0.1), SHAPES)


def test_galore_nondefault_matches_optax_in_float64_and_is_as_close_in_float32(
    standard_promotion,
):
    compare_jitted(
        lambda: galore(constant(0.05), base_optimizer=optjax.scale_by_rms(), **NON_DEFAULT),
        lambda: optax.contrib.galore(
            constant(0.05), base_optimizer=optax.scale_by_rms(), **NON_DEFAULT
        ),
        {"vector": (3,), "tall": (4, 3), "cube": (2, 3, 2)},
    )


def test_dimension_numbers_as_function_tree_or_one_spec_agree():
    # The axes of a matrix swapped, said two ways, and the default on the transposed matrix.
    params, (g,) = problem(jnp.float32, steps=1, shapes={"wide": (2, 3)})
    base = optjax.identity()
    ways = [transposed, GaLoreDimensionNumbers(1, 0)]  # a function, one spec (a tree: above)
    updates = []
    for dims in ways:
        tx = scale_by_galore(1, base_optimizer=base, weight_dimension_numbers=dims)
        updates.append(tx.update(g, tx.init(params))[0]["wide"])
    tx, g_t = scale_by_galore(1, base_optimizer=base), {"wide": g["wide"].T}
    updates.append(tx.update(g_t, tx.init(g_t))[0]["wide"].T)
    for u in updates[1:]:
        np.testing.assert_allclose(u, updates[0], rtol=1e-6)


def galore_adam_spec(grads, rank, gap, b1=0.9, b2=0.999, eps=1e-8):
    """GaLore with Adam on one matrix, the obvious NumPy loop: yields (update, projector). Each
    refreshed singular vector takes the sign of the one it replaces."""
    m = v = p = None
    for t, g in enumerate(grads, start=1):
        left, r = g.shape[0] >= g.shape[1], min(rank, *g.shape)
        if (t - 1) % gap == 0:
            u, _, vh = np.linalg.svd(g, full_matrices=False)
            new = u[:, :r] if left else vh[:r].T
            p = new if p is None else new * np.where(np.sum(p * new, axis=0) < 0, -1.0, 1.0)
        low = p.T @ g if left else g @ p
        m = (1 - b1) * low if m is None else b1 * m + (1 - b1) * low
        v = (1 - b2) * low**2 if v is None else b2 * v + (1 - b2) * low**2
        n = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        yield (p @ n if left else n @ p.T), p


def test_adam_across_refreshes_matches_numpy_oracle_and_svd():
    shapes = {"tall": (5, 3), "wide": (3, 4)}
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, steps=5, seed=1, shapes=shapes)
        got = run_jitted(scale_by_galore(rank=2, update_proj_gap=2), params, grads, states=True)
    for k in shapes:
        spec = galore_adam_spec([np.asarray(g[k]) for g in grads], rank=2, gap=2)
        for t, ((u, _, state), (u_ref, p_ref), g) in enumerate(zip(got, spec, grads, strict=True)):
            np.testing.assert_allclose(u[k], u_ref, rtol=1e-9, atol=1e-12, err_msg=f"{k} {t}")
            p = state.projector[k]
            np.testing.assert_allclose(p, p_ref, atol=1e-12)  # the same signs, once aligned
            if t % 2 == 0:  # refreshed now: NumPy's singular vectors of g, up to their signs
                left = shapes[k][0] >= shapes[k][1]
                svd = np.linalg.svd(np.asarray(g[k]), full_matrices=False)
                vectors = svd[0][:, :2] if left else svd[2][:2].T
                np.testing.assert_allclose(p @ p.T, vectors @ vectors.T, atol=1e-12)
                np.testing.assert_allclose(np.abs(np.sum(p * vectors, 0)), 1.0, rtol=1e-12)


def test_refresh_keeps_momentum_where_optax_lapack_sign_flip_reverses_it(standard_promotion):
    # Gradients G then -G of a rank-1 wide matrix, refreshed every step, momentum 0.9: the
    # projection loses nothing, so GaLore should step as momentum SGD does: -G, then +0.1 G.
    # LAPACK (on CPU) gives -G the right singular vector of G negated: optax's refreshed
    # projector is -Q, the carried momentum's coordinate is read backwards, and its second step
    # is +1.9 G.
    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.3, 1.0, -1.0, 2.0])
    g = jnp.asarray(np.outer(a, b), jnp.float32)
    grads, w = [g, -g], jnp.zeros((3, 4))
    steps = {
        "sgd": run(optax.sgd(1.0, momentum=0.9), w, grads),
        "optjax": run_jitted(galore(1.0, 1, 1, base_optimizer=optjax.trace(0.9)), w, grads),
        "optax": run_jitted(
            optax.contrib.galore(1.0, 1, 1, base_optimizer=optax.trace(0.9)), w, grads
        ),
    }
    second = {lib: out[1][0] / np.asarray(g) for lib, out in steps.items()}
    np.testing.assert_allclose(second["sgd"], 0.1, rtol=1e-5)
    np.testing.assert_allclose(second["optjax"], 0.1, rtol=1e-4)
    np.testing.assert_allclose(second["optax"], 1.9, rtol=1e-4)


def test_float64_matrix_is_projected_in_float64_where_optax_rounds_to_float32(
    standard_promotion,
):
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, steps=1, shapes={"tall": (6, 3)})
        errors = {}
        for lib, make in [("optjax", scale_by_galore), ("optax", optax.contrib.scale_by_galore)]:
            tx = make(rank=3, base_optimizer=optax.identity())
            _, state = tx.update(grads[0], tx.init(params))
            p = np.asarray(state.projector["tall"])
            assert p.dtype == np.float64
            errors[lib] = np.abs(p.T @ p - np.eye(3)).max()  # P's columns are orthonormal
    assert errors["optjax"] < 1e-14 < 1e-9 < errors["optax"]


def test_complex_matrix_projected_with_conjugate_transpose_where_optax_drops_imaginary():
    # P P^H G is the best rank-r approximation of G (NumPy's truncated SVD), complex as G is.
    # optax casts the complex gradient to float32 for its SVD (with a warning: the imaginary
    # part is dropped) and transposes P without conjugating it: even at full rank, where
    # nothing should be lost, its projection is another matrix.
    rng = np.random.default_rng(0)
    tall, wide = [rng.normal(size=s) + 1j * rng.normal(size=s) for s in [(4, 3), (3, 5)]]
    grads = {"tall": jnp.asarray(tall, jnp.complex64), "wide": jnp.asarray(wide, jnp.complex64)}
    tx = scale_by_galore(rank=2, base_optimizer=optjax.identity())
    u, _ = tx.update(grads, tx.init(grads))
    for k, g in [("tall", tall), ("wide", wide)]:
        left, s, right = np.linalg.svd(g, full_matrices=False)
        assert u[k].dtype == jnp.complex64
        np.testing.assert_allclose(u[k], (left[:, :2] * s[:2]) @ right[:2], atol=1e-5)

    theirs = optax.contrib.scale_by_galore(rank=3, base_optimizer=optax.identity())
    full = {"tall": grads["tall"]}
    with jax.numpy_dtype_promotion("standard"), pytest.warns(Warning, match="complex to real"):
        u, _ = theirs.update(full, theirs.init(full))
    assert np.abs(np.asarray(u["tall"]) - tall).max() > 0.1


def test_flat_layout_matches_tree_path():
    # GaLore needs each leaf's shape: on the flat layout it runs on the views (flat.per_leaf).
    params, grads = problem(jnp.float32, steps=2, shapes={"vector": (3,), "wide": (2, 3)})
    tx = galore(0.1, rank=1, update_proj_gap=1)
    flat_params, layout = flat.flatten(params)
    flat_run = run_jitted(tx, flat_params, [layout.flatten(g) for g in grads])
    for (u, p), (flat_u, flat_p) in zip(run_jitted(tx, params, grads), flat_run, strict=True):
        for a, b in [(u, flat_u), (p, flat_p)]:
            got = layout.unflatten(jax.tree.map(jnp.asarray, b))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(got), strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_state_shapes_are_low_rank_and_keep_bf16():
    params = {"w": jnp.ones((6, 4), jnp.bfloat16), "v": jnp.ones((8, 2)), "b": jnp.ones(4)}
    state = jax.eval_shape(scale_by_galore(rank=2).init, params)
    assert isinstance(state, GaLoreState)
    adam = state.base_optimizer_state
    assert adam.mu["w"].shape == (2, 4) and adam.mu["w"].dtype == jnp.bfloat16
    assert adam.nu["w"].dtype == jnp.float32  # optjax's second moments of bf16: float32
    assert state.projector["w"].shape == (6, 2) and state.projector["w"].dtype == jnp.bfloat16
    assert adam.mu["v"].shape == (2, 2) and state.projector["v"].shape == (8, 2)
    assert adam.mu["b"].shape == (4,) and state.projector["b"].shape == (0, 0)


BAD = {
    "rank": [0, -1, 2.5, True, None],
    "update_proj_gap": [0, -3, 1.5],
    "scale": [float("nan"), float("inf"), "1"],
    "learning_rate": [-1.0, float("nan")],
    "weight_decay": [-0.1, float("inf")],
}


@pytest.mark.parametrize("arg", sorted(BAD))
def test_bad_hyperparameters_raise_naming_the_argument(arg):
    for value in BAD[arg]:
        with pytest.raises(ValueError, match=arg):
            galore(**{"learning_rate": 0.1, arg: value})


@pytest.mark.parametrize(
    "dims",
    [GaLoreDimensionNumbers(0, 0), GaLoreDimensionNumbers(0, 1), GaLoreDimensionNumbers(0, 5)],
    ids=["overlapping", "missing_axis", "out_of_range"],
)
def test_bad_dimension_numbers_raise_at_init(dims):
    with pytest.raises(ValueError, match=r"axis|axes"):
        scale_by_galore(weight_dimension_numbers=dims).init({"cube": jnp.zeros((2, 3, 4))})
