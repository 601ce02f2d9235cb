"""Complex parameters stepped as pairs of real ones.

optjax's transforms step a complex parameter as optax documents (|g|^2 where the papers square
g: the step turns with the gradient's phase). `split_real_and_imaginary` instead gives the inner
transform the real and imaginary parts as two real leaves, so that an optimizer treats z = x + iy
exactly as it would treat the real pair (x, y), e.g. per-component Adam or sign descent.

Note on gradients: ``jax.grad`` of a real loss with respect to a complex z gives conj(dL/dz*)
scaled by 2 (JAX's convention differs from torch's); the steepest-descent direction is its
conjugate, ``jnp.conj(jax.grad(loss)(z))``: conjugate the gradient before ``update``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax.base import GradientTransformation, OptState
from optjax.core import extra_args_filter

__all__ = [
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "split_real_and_imaginary",
]


class SplitRealAndImaginaryArrays(NamedTuple):
    """The two real arrays a complex leaf is split into (a pytree node of two leaves)."""

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    inner_state: OptState  # the inner transform's state, over the split (all real) tree


def _split(x):
    """A complex leaf as its (real, imaginary) pair; a real leaf, or None, as it is."""
    if x is not None and jnp.iscomplexobj(x):
        x = jnp.asarray(x)
        return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
    return x


def _merge(pair, like):
    """The complex leaf of ``like``'s dtype that ``pair`` holds; a leaf that was real, as it is."""
    if not isinstance(pair, SplitRealAndImaginaryArrays):
        return pair
    dtype = jnp.result_type(like)
    part = jnp.finfo(dtype).dtype  # float32 for complex64, float64 for complex128
    return jax.lax.complex(pair.real.astype(part), pair.imaginary.astype(part)).astype(dtype)


def _is_pair(x) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
    r"""Run ``inner`` on the real and imaginary parts of each complex leaf as two real leaves.

        (u_re, u_im) = inner(re g_t, im g_t)        u_t = u_re + i u_im

    (and likewise for params, which ``inner`` sees split). Real leaves pass to ``inner`` as they
    are. Each complex update keeps its gradient's dtype. Keyword extras of ``update`` (e.g.
    ``value=``) are forwarded to ``inner`` where its ``update`` takes them.

    Example:
        >>> tx = optjax.contrib.split_real_and_imaginary(optjax.scale_by_sign())
        >>> g = jnp.array([3.0 - 4.0j])
        >>> tx.update(g, tx.init(jnp.zeros(1, jnp.complex64)))[0]  # the sign of each part
        Array([1.-1.j], dtype=complex64)

    Reference: optax 0.2.8, ``optax.contrib.split_real_and_imaginary``; optax issue #196 on
    optimizers for complex parameters.
    """
    keep = extra_args_filter(inner.update)

    def init(params):
        return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

    def update(updates, state, params=None, **extra_args):
        split_updates = jax.tree.map(_split, updates)
        split_params = None if params is None else jax.tree.map(_split, params)
        new, inner_state = inner.update(
            split_updates, state.inner_state, split_params, **keep(extra_args)
        )
        merged = jax.tree.map(_merge, new, updates, is_leaf=_is_pair)
        return merged, SplitRealAndImaginaryState(inner_state)

    return GradientTransformation(init, update)
