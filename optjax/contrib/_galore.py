"""GaLore: the gradient of each weight matrix projected onto its top singular vectors, so that
the optimizer's state lives in a rank-r subspace (Zhao et al. 2024).

Conventions (optax 0.2.8's, where they are right):

- A matrix G (m x n) is projected from the side that saves most: with m >= n, on the left,
  R = P^H G (r x n) with P the first r left singular vectors of G; with m < n, on the right,
  R = G Q (m x r) with Q the first r right singular vectors. r = min(rank, m, n).
- P (or Q) is recomputed by an SVD of the current gradient at steps 1, 1 + update_proj_gap, ...;
  the base optimizer's moments are carried across a refresh as they are (as in the paper).
- Singular vectors are defined up to their sign (a phase, if complex; and up to a rotation for
  repeated singular values): LAPACK picks one, arbitrarily. Within one period the full-space step
  P base(P^H G) does not depend on it for a base optimizer that commutes with sign flips (Adam,
  RMSprop, momentum, ...); across a refresh, a carried moment does: a flipped column negates the
  moment's coordinate on it. optax keeps LAPACK's sign, so a refresh can turn momentum against
  the gradient (LAPACK gives -G the right singular vectors of G negated: after gradients G, -G,
  optax's momentum is -1.9 G where momentum SGD's is -0.1 G). optjax turns each new singular
  vector to agree in sign with the one it replaces (`_aligned`), which makes the trajectory
  independent of LAPACK's choice.

Also where optjax differs from optax: the SVD and the projections run in the gradient's compute
dtype (float32 for bf16, float64 for float64: optax does them in float32 always), and a complex
matrix is projected with the conjugate transpose (optax casts it to float32, dropping its
imaginary part, and transposes without conjugating).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from optjax import tree
from optjax._checks import check_finite, check_learning_rate, check_positive_int
from optjax.base import GradientTransformation, OptState, ScalarOrSchedule, StepCount, Updates
from optjax.contrib._muon import _explicit_sharding
from optjax.core import chain
from optjax.flat import per_leaf
from optjax.transforms.adaptive import scale_by_adam
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "galore", "scale_by_galore"]


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a weight form the rows (``reduction_axis``, the inputs) and the columns
    (``output_axis``) of the matrix GaLore projects, e.g. ``GaLoreDimensionNumbers(0, (1, 2))``
    for attention weights stored as (embed, heads, head_dim). Every axis must be in one of them.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class GaLoreState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    base_optimizer_state: OptState  # the base optimizer's state, over the low-rank gradients
    projector: Updates  # P (m x r) or Q (n x r) per projected leaf; a (0, 0) array elsewhere


class _Matrix(NamedTuple):
    """How one leaf is viewed as an (m, n) matrix: transpose, then reshape."""

    perm: tuple[int, ...]
    shape: tuple[int, int]
    transposed_shape: tuple[int, ...]

    @classmethod
    def of(cls, x, dims: GaLoreDimensionNumbers) -> _Matrix:
        shape = jnp.shape(x)
        if len(shape) < 2:
            raise ValueError(f"GaLore projects arrays of rank >= 2, got one of shape {shape}")
        axes = []
        for name in ("reduction_axis", "output_axis"):
            given = getattr(dims, name)
            given = (given,) if isinstance(given, int) else tuple(given)
            if any(not -len(shape) <= a < len(shape) for a in given):
                raise ValueError(f"{name}={getattr(dims, name)} is out of range for {shape}")
            axes.append(tuple(a % len(shape) for a in given))
        rows, cols = axes
        if set(rows) & set(cols) or sorted(rows + cols) != list(range(len(shape))):
            raise ValueError(
                "reduction_axis and output_axis must share no axis and cover them all, got "
                f"{dims} for an array of shape {shape}"
            )
        perm = rows + cols
        m = math.prod(shape[a] for a in rows)
        return cls(perm, (m, math.prod(shape) // m if m else 0), tuple(shape[a] for a in perm))

    @property
    def left(self) -> bool:
        """Whether the projector acts on the left (the taller side: m >= n)."""
        return self.shape[0] >= self.shape[1]

    def to_matrix(self, x):
        return jnp.transpose(x, self.perm).reshape(self.shape)

    def from_matrix(self, y):
        inverse = sorted(range(len(self.perm)), key=self.perm.__getitem__)
        return jnp.transpose(y.reshape(self.transposed_shape), inverse)


def _dims_per_leaf(weight_dimension_numbers, params) -> list:
    """One GaLoreDimensionNumbers (or None: not projected) per leaf of ``params``."""
    spec = weight_dimension_numbers
    if spec is None:  # only the matrices, rows x columns
        return [
            GaLoreDimensionNumbers() if jnp.ndim(x) == 2 else None for x in jax.tree.leaves(params)
        ]
    if isinstance(spec, GaLoreDimensionNumbers):  # one spec for every array of rank >= 2
        return [spec if jnp.ndim(x) >= 2 else None for x in jax.tree.leaves(params)]
    if callable(spec):
        spec = spec(params)
    treedef: Any = jax.tree.structure(params)
    try:
        return treedef.flatten_up_to(spec)
    except (ValueError, TypeError):
        raise ValueError(
            "weight_dimension_numbers must give a GaLoreDimensionNumbers or None for each leaf "
            f"of params ({treedef}), got {spec!r}"
        ) from None


def _conj_t(x):
    return jnp.conj(x).T if jnp.iscomplexobj(x) else x.T


def _aligned(new, old):
    """``new``'s columns (singular vectors, each defined up to its sign, or its phase if complex)
    times the sign (phase) that makes each one's inner product with ``old``'s real and >= 0:
    the moments the base optimizer carries across a refresh keep their meaning. A column
    orthogonal to its predecessor (the first SVD: old = 0) keeps LAPACK's sign."""
    inner = jnp.sum(jnp.conj(old) * new, axis=0)  # <old_i, new_i>
    size = jnp.abs(inner)
    turn = jnp.where(
        size > 0, jnp.conj(inner) / jnp.where(size > 0, size, 1).astype(inner.dtype), 1
    )
    return new * turn.astype(new.dtype)


# On a mesh with Explicit axes (jax.make_mesh's default), JAX types each array with its sharding
# and asks where an operation's output goes when it cannot tell: the state built from a matrix
# keeps the matrix's sharding on the axis it shares with it, and its rank axis is whole on every
# device. Elsewhere (no mesh, Auto axes) these run the operations as they are.


def _without(sharding, axis: int) -> P:
    """``sharding``'s spec with ``axis`` whole on every device."""
    spec = list(sharding.spec)
    spec += [None] * (axis + 1 - len(spec))  # a spec may leave trailing axes out
    spec[axis] = None
    return P(*spec)


def _leading(x2, r: int, axis: int):
    """The first ``r`` rows (axis 0: r x n) or columns (axis 1: m x r) of the matrix ``x2``."""
    index = (slice(r), slice(None)) if axis == 0 else (slice(None), slice(r))
    sharding = _explicit_sharding(x2)
    if sharding is None:
        return x2[index]
    # The axis made whole first: a slice of a split axis is typed only where the mesh divides r.
    whole = jax.sharding.reshard(x2, sharding.update(spec=_without(sharding, axis)))
    return jax.lax.slice_in_dim(whole, 0, r, axis=axis)


def _rank_axis_whole(x, axis: int):
    """A concrete array on a mesh with Auto axes placed with ``axis`` (its rank axis) whole on
    every device, as the Explicit-axes path types it; anything else as it is (under jit on Auto
    axes XLA places it)."""
    sharding = getattr(x, "sharding", None)
    if isinstance(x, jax.core.Tracer) or not isinstance(sharding, jax.sharding.NamedSharding):
        return x
    return jax.device_put(x, sharding.update(spec=_without(sharding, axis)))


def _whole(x):
    """``x`` on every device (an SVD has no rule for a split matrix)."""
    sharding = _explicit_sharding(x)
    return x if sharding is None else jax.sharding.reshard(x, sharding.update(spec=P()))


def _laid_out_like(x, like):
    """``x`` split as ``like`` is."""
    sharding = _explicit_sharding(like)
    return x if sharding is None else jax.sharding.reshard(x, sharding)


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_dimension_numbers: GaLoreDimensionNumbers | Any | Callable | None = None,
) -> GradientTransformation:
    r"""Run ``base_optimizer`` on low-rank projections of each matrix's gradient (GaLore).

    For a leaf viewed as an m x n matrix G_t (see ``weight_dimension_numbers``), with
    r = min(rank, m, n) and T = update_proj_gap:

        every T steps (t = 1, 1 + T, ...):  U S V^H = svd(G_t),  P = U[:, :r]   (m >= n)
                                                                 Q = V[:, :r]   (m < n)
            (each new column's sign chosen so that its inner product with the old one is >= 0)
        R_t = P^H G_t              (r x n)       or    R_t = G_t Q      (m x r)
        N_t = base_optimizer(R_t)                       (its state is r x n or m x r)
        u_t = scale P N_t                               or    u_t = scale N_t Q^H

    Other leaves (vectors, scalars, leaves given None) get ``base_optimizer``'s update of the
    whole gradient, without ``scale``. ``base_optimizer`` (default ``scale_by_adam()``) must not
    need ``params``: it sees low-rank shapes, and is given None. ``weight_dimension_numbers``:
    None (project every 2-D leaf), one `GaLoreDimensionNumbers` (for every leaf of rank >= 2),
    a tree of them (None where a leaf is not projected), or a function of params giving one.
    Each refreshed singular vector takes the sign of the one it replaces (see the module doc).

    Example:
        >>> tx = optjax.contrib.scale_by_galore(rank=1, base_optimizer=optjax.identity())
        >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> u, _ = tx.update(g, tx.init(jnp.zeros((3, 2))))
        >>> u  # the rank-1 part of g: its top singular triple
        Array([[3., 0.],
               [0., 0.],
               [0., 0.]], dtype=float32)

    Reference: Zhao, Zhang, Chen, Wang, Anandkumar & Tian, "GaLore: Memory-Efficient LLM
    Training by Gradient Low-Rank Projection", 2024, Algorithm 2.
    """
    check_positive_int("rank", rank)
    check_positive_int("update_proj_gap", update_proj_gap)
    check_finite("scale", scale)
    base = scale_by_adam() if base_optimizer is None else base_optimizer

    def layout(params):
        dims = _dims_per_leaf(weight_dimension_numbers, params)
        leaves = jax.tree.leaves(params)
        return [None if d is None else _Matrix.of(x, d) for x, d in zip(leaves, dims)]

    def init(params):
        leaves, treedef = jax.tree.flatten(params)
        projectors, proxies = [], []
        for x, mat in zip(leaves, layout(params)):
            if mat is None:
                projectors.append(jnp.zeros((0, 0), jnp.result_type(x)))
                proxies.append(x)
                continue
            x2, r = mat.to_matrix(x), min(rank, *mat.shape)
            # Built from the parameter itself (its sharding follows), not from bare shapes.
            tall, wide = _leading(x2, r, 1), _leading(x2, r, 0)  # m x r and r x n
            projector = jnp.zeros_like(tall if mat.left else wide.T)  # m x r or n x r
            projectors.append(_rank_axis_whole(projector, 1))
            proxies.append(
                _rank_axis_whole(jnp.zeros_like(wide if mat.left else tall), int(mat.left) ^ 1)
            )
        base_state = base.init(treedef.unflatten(proxies))
        return GaLoreState(jnp.zeros([], jnp.int32), base_state, treedef.unflatten(projectors))

    def project(g, p, mat, refresh):
        """(R_t, the projector used) for one leaf."""
        g2 = tree.wide(mat.to_matrix(g))
        r = p.shape[1]

        def svd():
            u, _, vh = jnp.linalg.svd(_whole(g2), full_matrices=False)
            new = u[:, :r] if mat.left else _conj_t(vh[:r, :])
            new = _laid_out_like(new, p)
            return _aligned(new, p.astype(new.dtype)).astype(p.dtype)

        p = jax.lax.cond(refresh, svd, lambda: p)
        pw = p.astype(g2.dtype)
        # On Explicit axes the product contracts g2's split axis: R_t is laid out as the base
        # optimizer's state was built (`_leading`), the rank axis whole.
        sharding = _explicit_sharding(g2)
        out = None if sharding is None else _without(sharding, 0 if mat.left else 1)
        if mat.left:
            low = jnp.matmul(_conj_t(pw), g2, out_sharding=out)
        else:
            low = jnp.matmul(g2, pw, out_sharding=out)
        return low.astype(g.dtype), p

    def project_back(n, p, mat, g):
        nw = tree.wide(n)
        pw = p.astype(nw.dtype)
        full = pw @ nw if mat.left else nw @ _conj_t(pw)
        return mat.from_matrix(jnp.asarray(scale, full.dtype) * full).astype(g.dtype)

    def update(updates, state, params=None):
        del params  # the base optimizer sees low-rank shapes: it is given None
        leaves, treedef = jax.tree.flatten(updates)
        refresh = state.count % update_proj_gap == 0
        mats = layout(updates)
        projectors = treedef.flatten_up_to(state.projector)
        lows, new_projectors = [], []
        for g, p, mat in zip(leaves, projectors, mats):
            low, p = (g, p) if mat is None else project(g, p, mat, refresh)
            lows.append(low)
            new_projectors.append(p)
        steps, base_state = base.update(treedef.unflatten(lows), state.base_optimizer_state, None)
        full = [
            n if mat is None else project_back(n, p, mat, g)
            for n, p, mat, g in zip(treedef.flatten_up_to(steps), new_projectors, mats, leaves)
        ]
        new_state = GaLoreState(
            tree.safe_increment(state.count), base_state, treedef.unflatten(new_projectors)
        )
        return treedef.unflatten(full), new_state

    # Each leaf's own shape: on the flat layout, it runs on the views.
    return per_leaf(GradientTransformation(init, update))


def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_decay: float = 0.0,
    mask: Any | Callable | None = None,
    weight_dimension_numbers: GaLoreDimensionNumbers | Any | Callable | None = None,
) -> GradientTransformation:
    """GaLore: `scale_by_galore` (Adam on low-rank projections by default), decoupled weight
    decay in the full space (``add_decayed_weights``), then the learning rate. The update rule:
    see scale_by_galore. ``base_optimizer`` must not need params (no adamw: use
    ``weight_decay``); if it has a learning rate of its own, pass ``learning_rate=1.0``.

    Example:
        >>> tx = optjax.contrib.galore(0.1, rank=1)
        >>> g, w = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), jnp.zeros((3, 2))
        >>> u, _ = tx.update(g, tx.init(w), w)
        >>> round(float(u[0, 0]), 4), int(jnp.count_nonzero(u))  # -0.1 sign(R) projected back
        (-0.1, 1)
    """
    check_learning_rate("learning_rate", learning_rate)
    return chain(
        scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
