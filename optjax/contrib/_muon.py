"""Muon: momentum orthogonalised by Newton-Schulz for the matrices of a network, AdamW for the rest.

A weight matrix W (a Flax kernel, laid out (in, out): x W = y) is stepped along the orthogonal
factor of its momentum, U V^T where M = U S V^T, found without an SVD by a few steps of a quintic
Newton-Schulz iteration (`orthogonalize_via_newton_schulz`). Leaves that are not matrices (biases,
norms' scales, scalars) are stepped by AdamW, chosen as optax 0.2.8 chooses: rank 2 goes to Muon,
anything else to AdamW, unless ``muon_weight_dimension_numbers`` says which axes of a kernel of
any rank form the matrix (`MuonDimensionNumbers`; None marks a leaf for AdamW).

Numerics: the momentum has the parameter's dtype unless ``mu_dtype`` is given (complex for complex
parameters); the bias corrections, the Newton-Schulz iteration and its coefficients are formed in
float32 at least (optax rounds the coefficients and every product to bf16 for bf16 parameters:
3.4445 becomes 3.4375), and each update is rounded once to the gradient's dtype. A zero momentum
gives a zero update for every ``eps`` (optax divides 0 by 0 when ``eps=0``). Complex matrices are
orthogonalised with the conjugate transpose, X X^H, in every preconditioning (optax's Schatten
one uses X X^T, which is not the polar factor's iteration), and the adaptive scale is the real
inner product Re <M, O>.

Where optax 0.2.8 is wrong, optjax is right (tests/test_contrib_muon.py shows each): scale_by_muon
and scale_by_shape with their default ``weight_dimension_numbers=None`` accept a tree of matrices
(optax raises); a Python-number leaf goes to AdamW (optax raises AttributeError); a 2-D
``ns_coeffs`` gives one step per row and ignores ``ns_steps``, as optax documents (optax raises
"Not enough coeffs" when there are more rows than ``ns_steps``); the preset named in optax's
docstring, ``"muon"``, is accepted beside ``"standard"``; the AOL and Schatten preconditionings use
the ``eps`` given (optax's use 1e-8 whatever is passed); an axis outside a leaf's rank is refused
(optax wraps it modulo the rank).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from optjax import tree
from optjax._checks import (
    as_number,
    check_choice,
    check_decay,
    check_integer,
    check_learning_rate,
    check_nonnegative,
    is_traced,
)
from optjax.base import EmptyState, GradientTransformation, ScalarOrSchedule, StepCount, Updates
from optjax.contrib._parameter_free import _as_optimizer
from optjax.core import chain
from optjax.flat import per_leaf
from optjax.optimizers.classic import adamw
from optjax.transforms.layerwise import mask_tree
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate
from optjax.wrappers.masking import partition

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "muon",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_shape",
]

# Jordan et al.'s quintic: the largest slope at 0 (3.4445) for which 5 steps still bring every
# singular value in (0, 1] into a band around 1 (about [0.68, 1.13]), not to 1 itself.
_STANDARD_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Ahn et al. (Dion): one quintic per step, the last ones converging closer to 1.
_DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS_COEFFS_PRESETS = {
    "standard": _STANDARD_NS_COEFFS,
    "muon": _STANDARD_NS_COEFFS,  # the name optax's docstring gives it
    "dion": _DION_NS_COEFFS,
}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")

NsCoeffs = Sequence[float] | Sequence[Sequence[float]] | jax.Array | str


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight form the matrix Muon orthogonalises: x W = y, with W's
    ``reduction_axis`` (or axes) contracted with x and its ``output_axis`` (or axes) giving y.

    The default (0, 1) is a Flax Dense kernel, (in, out). The axes named are flattened, in the
    order given, into the matrix's rows (reduction) and columns (output); every other axis is a
    batch axis, each of whose slices is orthogonalised on its own. A conv kernel (H, W, in, out)
    is ``MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)``; a kernel of
    per-head projections (in, heads, head_dim), one matrix per head, is
    ``MuonDimensionNumbers(reduction_axis=0, output_axis=2)``. Negative axes count from the end.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class MuonState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # momentum m_t
    ns_coeffs: jax.Array  # the Newton-Schulz coefficients, shape (3,) or (steps, 3)


# A tree of MuonDimensionNumbers (or None) shaped like the params or a prefix of them, one
# MuonDimensionNumbers for every leaf, or a function params -> such a tree.
DimensionNumbers = MuonDimensionNumbers | Any | Callable[[Any], Any]


def _is_spec(x) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def _leaf_dimension_numbers(spec, like, who: str) -> list:
    """One MuonDimensionNumbers (or None) per leaf of ``like``: ``spec`` is None (None for every
    leaf), a MuonDimensionNumbers (for every leaf), a tree of them shaped like ``like`` or a
    prefix of it, or a function ``like -> such a tree``."""
    if callable(spec):
        spec = spec(like)
    entries, treedef_ = jax.tree.flatten(spec, is_leaf=_is_spec)
    treedef: Any = treedef_  # a PyTreeDef (untyped in jaxlib)
    for entry in entries:
        if not _is_spec(entry):
            raise ValueError(
                f"{who}: weight dimension numbers must be MuonDimensionNumbers or None, got "
                f"{entry!r}"
            )
    try:
        subtrees = treedef.flatten_up_to(like)
    except (ValueError, TypeError):
        raise ValueError(
            f"{who}: weight dimension numbers must have the structure of the params or a prefix "
            f"of it; got {treedef} for params {jax.tree.structure(like)}"
        ) from None
    return [entry for entry, sub in zip(entries, subtrees) for _ in jax.tree.leaves(sub)]


def _matrix_axes(shape: tuple, dims: MuonDimensionNumbers | None, where: str):
    """``(batch, reduction, output)`` axes of a leaf of ``shape``; None: a matrix as it is."""
    ndim = len(shape)
    if dims is None:
        if ndim != 2:
            raise ValueError(
                f"{where} has shape {shape}: Muon orthogonalises matrices; give "
                "MuonDimensionNumbers for a kernel of another rank"
            )
        dims = MuonDimensionNumbers()
    if ndim < 2:
        raise ValueError(f"{where} has shape {shape}: Muon orthogonalises leaves of rank >= 2")

    def normalized(axes, name):
        axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
        if not all(isinstance(a, (int, np.integer)) and -ndim <= a < ndim for a in axes):
            raise ValueError(
                f"{name} must be axes in [-{ndim}, {ndim}) of {where} of shape {shape}, "
                f"got {name}={dims!r}"
            )
        return tuple(int(a) % ndim for a in axes)

    reduction = normalized(dims.reduction_axis, "reduction_axis")
    output = normalized(dims.output_axis, "output_axis")
    if len(set(reduction + output)) != len(reduction + output):
        raise ValueError(
            f"reduction_axis and output_axis must be distinct axes of {where} of shape {shape}, "
            f"got {dims!r}"
        )
    batch = tuple(a for a in range(ndim) if a not in reduction + output)
    return batch, reduction, output


def _fans(shape: tuple, dims, where: str) -> tuple[int, int]:
    """``(fan_in, fan_out)``: the sizes of the reduction and output axes."""
    _, reduction, output = _matrix_axes(shape, dims, where)
    return math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)


def _real(x: jax.Array) -> jax.Array:
    return x.real if jnp.issubdtype(x.dtype, jnp.complexfloating) else x


def _safe_rsqrt(r: jax.Array, eps) -> jax.Array:
    """``1 / sqrt(max(r, eps))``, and 1 where that is 1 / 0 (a zero matrix, eps = 0)."""
    r = jnp.maximum(r, jnp.asarray(eps).astype(r.dtype))
    return jax.lax.rsqrt(jnp.where(r > 0, r, 1))


def _decay_weights(beta, dtype) -> tuple:
    """``(beta, 1 - beta)``: a Python number's 1 - beta formed in double precision (float32's
    0.95 is 0.94999999, whose 1 - beta is off by 2e-7), an array's in ``dtype``."""
    if isinstance(beta, (int, float)):
        return beta, 1 - beta
    b = jnp.asarray(beta).astype(dtype)
    return b, 1 - b


def _explicit_sharding(x: jax.Array) -> jax.sharding.NamedSharding | None:
    """``x``'s sharding where its type carries one, on a mesh with Explicit axes; else None."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or jax.sharding.AxisType.Explicit not in mesh.axis_types:
        return None
    return sharding


def _newton_schulz_step(x: jax.Array, a: jax.Array, c: jax.Array) -> jax.Array:
    """``c0 X + (c1 A + c2 A^2) X`` with A = X X^H given (whole on every device: the product
    keeps X's sharding)."""
    return c[0] * x + jnp.matmul(c[1] * a + c[2] * (a @ a), x, out_sharding=_explicit_sharding(x))


def _newton_schulz(x: jax.Array, rows: jax.Array, preconditioning: str, eps) -> jax.Array:
    """The iteration on one matrix, in x's dtype (already the compute dtype); ``rows`` holds one
    coefficient triple per step."""
    transposed = x.shape[0] > x.shape[1]  # f(X^T) = f(X)^T: iterate on the smaller X X^H
    if transposed:
        x = x.T
    if preconditioning in ("frobenius", "spectral"):
        if preconditioning == "frobenius":
            squares = jnp.sum(tree.abs_square(x))
            positive = squares > 0  # the norm's square root never sees 0: finite derivatives
            norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1)), 0)
        else:  # an SVD, of the whole matrix: gathered where it is split over Explicit axes
            sharding = _explicit_sharding(x)
            whole = x if sharding is None else jax.sharding.reshard(x, sharding.update(spec=P()))
            norm = jnp.linalg.norm(whole, ord=2)
        norm = norm + jnp.asarray(eps).astype(norm.dtype)
        x = x / jnp.where(norm > 0, norm, 1).astype(x.dtype)
    # On Explicit axes, X X^H contracts X's split axes: A (the smaller side squared) is made
    # whole on every device, and each product with X keeps X's sharding.
    gram = None if _explicit_sharding(x) is None else P()
    for i in range(rows.shape[0]):
        a = jnp.matmul(x, x.conj().T, out_sharding=gram)  # X X^H
        if i == 0 and preconditioning == "aol":  # Boissin et al.: rows scaled to ||D A D||_inf <= 1
            s = _safe_rsqrt(jnp.sum(jnp.abs(a), axis=-1), eps)[:, None]
            x, a = x * s.astype(x.dtype), a * (s * s.T).astype(a.dtype)
        elif i == 0 and preconditioning == "schatten":  # Grishina et al.: X / ||X||_{S4}
            s = _safe_rsqrt(jnp.sqrt(jnp.sum(tree.abs_square(a))), eps)
            x, a = x * s.astype(x.dtype), a * jnp.square(s).astype(a.dtype)
        x = _newton_schulz_step(x, a, rows[i])
    return x.T if transposed else x


def _coefficient_rows(ns_coeffs, ns_steps: int) -> jax.Array:
    """One coefficient triple per step: a triple repeated ``ns_steps`` times, or the rows of a
    2-D ``ns_coeffs`` as they are."""
    coeffs = jnp.asarray(ns_coeffs)
    if coeffs.ndim not in (1, 2) or coeffs.shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got shape {coeffs.shape}")
    return jnp.broadcast_to(coeffs, (ns_steps, 3)) if coeffs.ndim == 1 else coeffs


def _orthogonalize(x, rows, eps, axes: tuple, preconditioning: str) -> jax.Array:
    """Newton-Schulz on each matrix of ``x``, whose ``(batch, reduction, output)`` axes are
    ``axes`` (`_matrix_axes`), in x's compute dtype; ``rows``: one coefficient triple per step."""
    order = axes[0] + axes[1] + axes[2]
    sizes = [math.prod(x.shape[a] for a in group) for group in axes]
    matrices = tree.wide(x).transpose(order).reshape(sizes)
    rows = rows.astype(matrices.dtype)
    out = jax.vmap(lambda m: _newton_schulz(m, rows, preconditioning, eps))(matrices)
    return out.reshape([x.shape[a] for a in order]).transpose(np.argsort(order))


# One program per shape, dtype and configuration: called eagerly (outside jit), the iteration's
# dozens of small operations would each be dispatched (and compiled) on their own. Under jit it
# is inlined into the caller's program.
_orthogonalize_compiled = jax.jit(_orthogonalize, static_argnames=("axes", "preconditioning"))


def _is_real(c) -> bool:
    """A real number, or an array of integers or floats (not bools, strings or complex)."""
    if isinstance(c, (np.ndarray, jax.Array)) and c.shape != ():
        return jnp.issubdtype(c.dtype, jnp.integer) or jnp.issubdtype(c.dtype, jnp.floating)
    return as_number(c) is not None


def _check_ns_coeffs(ns_coeffs) -> Any:
    """``ns_coeffs`` with a preset's name resolved; raises unless it has shape (3,) or (n, 3)."""
    if isinstance(ns_coeffs, str):
        check_choice("ns_coeffs", ns_coeffs, NS_COEFFS_PRESETS)
        return NS_COEFFS_PRESETS[ns_coeffs]
    if is_traced(ns_coeffs) or any(map(is_traced, jax.tree.leaves(ns_coeffs))):
        return ns_coeffs
    real = all(map(_is_real, jax.tree.leaves(ns_coeffs)))  # np.asarray takes "0.9", True, 1j
    try:
        coeffs = np.asarray(ns_coeffs, np.float64) if real else np.zeros(0)
    except (TypeError, ValueError):
        coeffs = np.zeros(0)
    if (
        coeffs.ndim not in (1, 2)
        or coeffs.shape[-1] != 3
        or coeffs.size == 0
        or not np.all(np.abs(coeffs) <= np.finfo(np.float32).max)
    ):
        raise ValueError(
            "ns_coeffs must be finite numbers of shape (3,) or (n, 3), or one of "
            f"{sorted(NS_COEFFS_PRESETS)}, got ns_coeffs={ns_coeffs!r}"
        )
    return ns_coeffs


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: NsCoeffs,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    r"""Approximate the orthogonal (polar) factor U V^T of a matrix X = U S V^T.

        X_0 = X / (||X||_F + eps)                       ('frobenius'; ||X||_2 for 'spectral')
        X_{k+1} = a_k X_k + b_k (X_k X_k^H) X_k + c_k (X_k X_k^H)^2 X_k,    k = 0 .. K - 1

    Each step maps every singular value s of X_k by the odd quintic p_k(s) = a_k s + b_k s^3 +
    c_k s^5 and keeps the singular vectors, so X_K = U p(S / ||X||_F) V^T. With one triple
    ``ns_coeffs = (a, b, c)`` it is used ``ns_steps`` times; a 2-D ``ns_coeffs`` gives one row
    per step (``ns_steps`` is then ignored). Jordan et al.'s default (3.4445, -4.7750, 2.0315)
    trades exactness for speed: its slope at 0 is large, so 5 steps bring every singular value
    but the tiniest into a band of about [0.68, 1.13], not to 1. 'aol' (Boissin et al.) instead
    scales the rows of X_0 = X by D = diag(sum_j |(X X^H)_ij|)^(-1/2) inside the first step;
    'schatten' (Grishina et al.) divides X by its Schatten-4 norm ||X X^H||_F^(1/2) there. A zero
    matrix gives zeros, for every ``eps``. Complex X uses the conjugate transpose X^H.

    The iteration runs in float32 at least (coefficients too) and the result has x's dtype. A
    leaf of rank other than 2 needs ``dimension_numbers`` (see MuonDimensionNumbers).

    Example:
        >>> x = jnp.diag(jnp.array([3.0, 4.0]))   # X / ||X||_F has singular values 0.6, 0.8
        >>> o = optjax.contrib.orthogonalize_via_newton_schulz(x, (3.4445, -4.7750, 2.0315))
        >>> [round(float(s), 3) for s in jnp.diag(o)]   # p^5(0.6), p^5(0.8): near 1, not 1
        [0.723, 1.119]

    References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (blog post); Boissin et al., "Turbo-Muon: Accelerating Orthogonality-Based Optimization with
    Pre-Conditioning", 2025; Grishina et al., "Accelerating Newton-Schulz Iteration for
    Orthogonalization via Chebyshev-type Polynomials", 2025.
    """
    ns_coeffs = _check_ns_coeffs(ns_coeffs)
    check_integer("ns_steps", ns_steps, low=1)
    check_choice("preconditioning", preconditioning, PRECONDITIONINGS)
    check_nonnegative("eps", eps)
    x = jnp.asarray(x)
    axes = _matrix_axes(x.shape, dimension_numbers, "x")
    rows = _coefficient_rows(ns_coeffs, int(ns_steps))
    return _orthogonalize_compiled(tree.wide(x), rows, eps, axes, preconditioning).astype(x.dtype)


def _check_muon_arguments(ns_coeffs, ns_steps, beta, eps, preconditioning) -> Any:
    ns_coeffs = _check_ns_coeffs(ns_coeffs)
    check_integer("ns_steps", ns_steps, low=1)
    check_decay("beta", beta)
    check_nonnegative("eps", eps)
    check_choice("preconditioning", preconditioning, PRECONDITIONINGS)
    return ns_coeffs


def scale_by_muon(
    ns_coeffs: NsCoeffs = _STANDARD_NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype=None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: DimensionNumbers | None = None,
) -> GradientTransformation:
    r"""Replace each matrix's update by the orthogonalised momentum (Muon).

        m_t = beta m_{t-1} + (1 - beta) g_t
        m̂_t = m_t / (1 - beta^t)                     (nesterov=False)
        m̂_t = beta m_t / (1 - beta^{t+1}) + (1 - beta) g_t / (1 - beta^t)     (nesterov=True)
        u_t = NS(m̂_t) ≈ U V^T  where m̂_t = U S V^T   (orthogonalize_via_newton_schulz)

    With ``adaptive=True`` u_t is scaled by the dual norm of m̂_t, u_t = Re<m̂_t, NS(m̂_t)> NS(m̂_t)
    (Bernstein & Newhouse). Every leaf must be a matrix, or have its axes named by
    ``weight_dimension_numbers``: a MuonDimensionNumbers for every leaf, a tree of them shaped
    like the params (or a prefix), or a function params -> such a tree (None: a matrix as it is).
    `muon` sends the other leaves to AdamW. m_t has the parameter's dtype unless ``mu_dtype``
    is given; the rest is formed in float32 at least and rounded once.

    Example:
        >>> tx = optjax.contrib.scale_by_muon()
        >>> g = jnp.array([[3.0, 0.0], [0.0, 4.0]])   # m̂_1 is a multiple of g
        >>> u, state = tx.update(g, tx.init(g))      # as orthogonalize_via_newton_schulz(g)
        >>> [round(float(s), 3) for s in jnp.diag(u)]
        [0.723, 1.119]

    References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (blog post); Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology", 2024 (the
    adaptive scale).
    """
    ns_coeffs = _check_muon_arguments(ns_coeffs, ns_steps, beta, eps, preconditioning)
    steps = int(ns_steps)

    def init(params):
        return MuonState(
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            jnp.asarray(ns_coeffs, tree.scalar_dtype()),
        )

    def update(updates, state, params=None):
        del params  # Muon does not look at the parameters.
        count = tree.safe_increment(state.count)
        tree.check_same_structure(updates, state.mu, "updates", "state.mu")
        paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
        dims = _leaf_dimension_numbers(weight_dimension_numbers, updates, "scale_by_muon")
        corrections = (
            tree.one_minus_power(beta, count),
            tree.one_minus_power(beta, tree.safe_increment(count)),
        )
        rows = _coefficient_rows(state.ns_coeffs, steps)

        def step(path, g, m, dims):
            axes = _matrix_axes(g.shape, dims, f"updates{jax.tree_util.keystr(path)}")
            wide = tree.compute_dtype(g.dtype, m.dtype)
            b, one_minus_b = _decay_weights(beta, wide)
            correction, next_correction = (c.astype(wide) for c in corrections)
            g_wide = g.astype(wide)
            m = b * m.astype(wide) + one_minus_b * g_wide
            if nesterov:
                m_hat = b * (m / next_correction) + one_minus_b * (g_wide / correction)
            else:
                m_hat = m / correction
            u = _orthogonalize_compiled(m_hat, rows, eps, axes, preconditioning)
            if adaptive:  # the dual norm Re<m̂, u> (real: m̂ and u share singular vectors)
                u = jnp.sum(_real(m_hat.conj() * u)).astype(wide) * u
            return u.astype(g.dtype), m

        mus = jax.tree.leaves(state.mu)
        out = [step(p, g, m, d) for (p, g), m, d in zip(paths, mus, dims, strict=True)]
        new_updates = treedef.unflatten([u for u, _ in out])
        mu = jax.tree.unflatten(jax.tree.structure(state.mu), [m for _, m in out])
        mu = tree.cast_like(mu, state.mu)
        return new_updates, MuonState(count, mu, state.ns_coeffs)

    # Each leaf is a matrix of its own: on the flat layout (optjax.flat) this runs on the views.
    return per_leaf(GradientTransformation(init, update))


def scale_by_shape(
    weight_dimension_numbers: DimensionNumbers | None = None,
    consistent_rms: float | None = None,
) -> GradientTransformation:
    r"""Scale each matrix's update by a factor of its shape (fan_in, fan_out).

        u_t = sqrt(max(1, fan_out / fan_in)) g_t                  (consistent_rms None)
        u_t = consistent_rms sqrt(max(fan_in, fan_out)) g_t       (otherwise)

    fan_in is the size of the reduction axes and fan_out of the output axes
    (``weight_dimension_numbers`` as in scale_by_muon; None: a Flax kernel laid out (in, out),
    for which the first factor is Jordan's sqrt(max(1, rows / cols)) of a PyTorch weight laid
    out (out, in)). An orthogonal fan_in x fan_out matrix has root mean square
    1 / sqrt(max(fan_in, fan_out)): the second factor makes it ``consistent_rms`` whatever the
    shape, like an AdamW step's (Liu et al. recommend 0.2), so that AdamW's learning rate and
    weight decay carry over.

    Example:
        >>> tx = optjax.contrib.scale_by_shape()
        >>> tx.update(jnp.ones((2, 8)), tx.init(None))[0][0, 0]   # sqrt(8 / 2)
        Array(2., dtype=float32)

    References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (blog post); Liu et al., "Muon is Scalable for LLM Training", 2025 (consistent RMS).
    """
    if consistent_rms is not None:
        check_nonnegative("consistent_rms", consistent_rms)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
        dims = _leaf_dimension_numbers(weight_dimension_numbers, updates, "scale_by_shape")

        def scaled(path, g, dims):
            fan_in, fan_out = _fans(g.shape, dims, f"updates{jax.tree_util.keystr(path)}")
            wide = tree.compute_dtype(g.dtype)
            if consistent_rms is None:
                factor = jnp.asarray(math.sqrt(max(1.0, fan_out / fan_in)), wide)
            else:
                rms = jnp.asarray(consistent_rms).astype(wide)
                factor = jnp.asarray(math.sqrt(max(fan_in, fan_out)), wide) * rms
            return (tree.wide(g) * factor).astype(g.dtype)

        out = [scaled(p, g, d) for (p, g), d in zip(paths, dims, strict=True)]
        return treedef.unflatten(out), state

    return per_leaf(GradientTransformation(init, update))


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: NsCoeffs = _STANDARD_NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
    mu_dtype=None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: DimensionNumbers | None = None,
    consistent_rms: float | None = None,
) -> GradientTransformation:
    """Muon for the matrices, AdamW for the other leaves (optax.contrib.muon).

    The matrices (rank 2, or the leaves ``muon_weight_dimension_numbers`` gives
    MuonDimensionNumbers; None there marks a leaf for AdamW) are stepped by scale_by_muon,
    scale_by_shape (``consistent_rms``), add_decayed_weights(weight_decay, weight_decay_mask),
    then the learning rate. The other leaves by adamw(adam_learning_rate or learning_rate,
    adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, adam_weight_decay, nesterov=nesterov): with
    the default ``nesterov=True`` that is NAdamW. The two groups are a `partition`, keyed
    'muon' and 'adam'. Update rules: see scale_by_muon and orthogonalize_via_newton_schulz;
    ``ns_coeffs`` may also name a preset ('standard' or 'muon', and 'dion').

    Example:
        >>> tx = optjax.contrib.muon(0.1)
        >>> params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
        >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 4.0]]), "b": jnp.array([1.0, -2.0])}
        >>> u = tx.update(g, tx.init(params), params)[0]
        >>> u["w"].round(4)         # -0.1 NS(g): see scale_by_muon
        Array([[-0.0723, -0.    ],
               [-0.    , -0.1119]], dtype=float32)
        >>> u["b"].round(4)         # NAdam's first step: -0.1 (1 + 0.9 / 1.9) sign(g)
        Array([-0.1474,  0.1474], dtype=float32)

    References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (blog post); Liu et al., "Muon is Scalable for LLM Training", 2025 (consistent_rms and the
    decoupled weight decay of the matrices).
    """
    check_learning_rate("learning_rate", learning_rate)
    ns_coeffs = _check_muon_arguments(ns_coeffs, ns_steps, beta, eps, preconditioning)
    check_nonnegative("weight_decay", weight_decay)
    check_decay("adam_b1", adam_b1)
    check_decay("adam_b2", adam_b2)
    check_nonnegative("adam_eps_root", adam_eps_root)
    check_nonnegative("adam_weight_decay", adam_weight_decay)
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    check_learning_rate("adam_learning_rate", adam_learning_rate)
    if consistent_rms is not None:
        check_nonnegative("consistent_rms", consistent_rms)

    def labels(params):
        if muon_weight_dimension_numbers is None:
            return jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adam", params)
        dims = _leaf_dimension_numbers(muon_weight_dimension_numbers, params, "muon")
        return jax.tree.structure(params).unflatten(["adam" if d is None else "muon" for d in dims])

    # The Muon group sees the params with MaskedNode() at AdamW's leaves: the dimension numbers
    # (a tree, or a prefix of one) and the weight-decay mask are matched to its leaves.
    spec = muon_weight_dimension_numbers
    if spec is None:
        spec = MuonDimensionNumbers()
    mask = None
    if weight_decay_mask is not None:

        def mask(params):
            return mask_tree(weight_decay_mask, params)

    groups = partition(
        {
            "muon": chain(
                scale_by_muon(
                    ns_coeffs,
                    ns_steps,
                    beta,
                    eps,
                    mu_dtype,
                    nesterov=nesterov,
                    adaptive=adaptive,
                    preconditioning=preconditioning,
                    weight_dimension_numbers=spec,
                ),
                scale_by_shape(spec, consistent_rms),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(
                adam_learning_rate,
                adam_b1,
                adam_b2,
                eps,
                adam_eps_root,
                mu_dtype,
                adam_weight_decay,
                nesterov=nesterov,
            ),
        },
        labels,
    )
    # Checked at its boundary as a chain is: a state made by another optimizer or for other
    # params is refused naming the leaf (partition would fail inside, on a missing field).
    # The groups are per leaf: on the flat layout it runs on the tree of views, as partition.
    return per_leaf(_as_optimizer("muon", groups))
