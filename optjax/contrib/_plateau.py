"""Reduce the step size when a monitored value (a loss, a validation metric) stops improving.

The transform is optax.contrib's ``reduce_on_plateau``, which mirrors torch.optim.lr_scheduler's
``ReduceLROnPlateau`` (mode "min"), with these conventions:

- ``patience`` counts as in optax (and Keras): the scale is cut at the ``patience``-th value in a
  row without improvement. torch cuts when that count *exceeds* patience, so torch's ``patience=p``
  is ``patience=p + 1`` here. ``patience=0`` cuts at every value that does not improve (as
  torch's ``patience=0`` does); optax's cuts at every value that *does* improve instead.
- Improvement is ``v < best - rtol |best| - atol``: torch's ``threshold_mode="rel"`` is
  ``rtol=threshold, atol=0`` and ``"abs"`` is ``rtol=0, atol=threshold`` (for best >= 0). optax
  and torch scale ``best`` by ``1 - rtol``, which for a negative best (a log-likelihood, a reward)
  moves the bar *up*, so that a worse value counts as an improvement; optjax takes ``|best|``.
  The first value is always an improvement (there is no baseline yet), also with ``rtol=1``, where
  optax's ``0 * inf`` is NaN and nothing ever improves.
- ``cooldown`` steps follow each cut, as in torch: values seen then still update ``best`` but
  never count towards a plateau. ``min_scale`` bounds the scale from below like torch's
  ``min_lr`` (torch's extra ``eps``, which skips cuts smaller than it, has no counterpart).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_integer,
    check_nonnegative,
    check_unit_interval,
    check_value,
    is_zero,
)
from optjax.base import GradientTransformation, StepCount
from optjax.flat import flat_ready

__all__ = ["ReduceLROnPlateauState", "reduce_on_plateau"]


class ReduceLROnPlateauState(NamedTuple):
    scale: jax.Array  # the factor the updates are multiplied by (1 until the first cut)
    best_value: jax.Array  # the lowest (averaged) value that counted as an improvement
    plateau_count: jax.Array  # int32: averaged values in a row without improvement
    cooldown_count: jax.Array  # int32: averaged values still to ignore after the last cut
    count: StepCount  # int32: values accumulated into avg_value so far
    avg_value: jax.Array  # mean of the values accumulated since the last averaged value


def _value_dtype(params) -> jnp.dtype:
    """The real dtype the scale and the values are kept in: the widest parameter's compute dtype
    (float32 at least, float64 for float64 parameters), real for complex ones."""
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    return jnp.dtype(jnp.finfo(tree.compute_dtype(*dtypes)).dtype)


@flat_ready
def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformation:
    r"""Multiply updates by a scale that is cut by ``factor`` when ``value`` stops improving.

    ``update(updates, state, params, value=v)`` takes the monitored value (e.g. the loss).
    Every ``accumulation_size`` calls, the mean v̄ of the values they got is judged:

        improved  = v̄ < best - rtol |best| - atol         (always, while best = +inf)
        best      = v̄ if improved else best
        plateau   = 0 if improved else plateau + 1
        in cooldown (cooldown_count > 0):  cooldown_count -= 1, plateau = 0
        else if not improved and plateau >= patience:
            s = max(factor s, min_scale), plateau = 0, cooldown_count = cooldown
        u_t = s g_t

    The scale s starts at 1 and is kept in float32 at least (float64 for float64 parameters),
    whatever the parameters' dtype. Where this differs from optax and torch.optim: see the module
    doc (``patience=0``; negative values; ``rtol=1``).

    Example:
        >>> tx = optjax.contrib.reduce_on_plateau(factor=0.5, patience=2)
        >>> state = tx.init(jnp.zeros(1))
        >>> for loss in [1.0, 1.0, 1.0]:  # the first is the best; two more without improvement
        ...     u, state = tx.update(jnp.ones(1), state, value=loss)
        >>> u
        Array([0.5], dtype=float32)

    Reference: torch.optim.lr_scheduler.ReduceLROnPlateau (PyTorch documentation); optax
    0.2.8, ``optax.contrib.reduce_on_plateau``.
    """
    check_value("factor", factor, lambda x: 0 < x < 1, "in (0, 1)")
    check_integer("patience", patience, low=0)
    check_unit_interval("rtol", rtol)
    check_nonnegative("atol", atol)
    if is_zero(rtol) and is_zero(atol):
        raise ValueError(
            f"rtol and atol cannot both be 0 (at least one must be > 0), got rtol={rtol!r} "
            f"and atol={atol!r}"
        )
    check_integer("cooldown", cooldown, low=0)
    check_integer("accumulation_size", accumulation_size, low=1)
    check_unit_interval("min_scale", min_scale)

    def init(params):
        dtype = _value_dtype(params)
        zero = jnp.zeros([], jnp.int32)
        return ReduceLROnPlateauState(
            scale=jnp.ones([], dtype),
            best_value=jnp.full([], jnp.inf, dtype),
            plateau_count=zero,
            cooldown_count=zero,
            count=zero,
            avg_value=jnp.zeros([], dtype),
        )

    def judge(state: ReduceLROnPlateauState, mean) -> ReduceLROnPlateauState:
        """The state after the averaged value ``mean`` is judged."""
        best, dtype = state.best_value, state.best_value.dtype
        bar = best - jnp.asarray(rtol, dtype) * jnp.abs(best) - jnp.asarray(atol, dtype)
        improved = mean < jnp.where(jnp.isinf(best), best, bar)  # nothing to compare with yet
        plateau = jnp.where(improved, 0, tree.safe_increment(state.plateau_count))
        in_cooldown = state.cooldown_count > 0
        cut = ~in_cooldown & ~improved & (plateau >= patience)
        cut_scale = jnp.maximum(
            state.scale * jnp.asarray(factor, dtype), jnp.asarray(min_scale, dtype)
        )
        no_cooldown = jnp.where(cut, cooldown, 0).astype(jnp.int32)
        return ReduceLROnPlateauState(
            scale=jnp.where(cut, cut_scale.astype(dtype), state.scale),
            best_value=jnp.where(improved, mean, best),
            plateau_count=jnp.where(in_cooldown | cut, 0, plateau).astype(jnp.int32),
            cooldown_count=jnp.where(in_cooldown, state.cooldown_count - 1, no_cooldown),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], dtype),
        )

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args  # only the monitored value matters
        if value is None:
            raise ValueError(
                "reduce_on_plateau needs the monitored value (e.g. the loss): call "
                "update(g, state, params, value=loss)"
            )
        dtype = state.avg_value.dtype
        count = tree.safe_increment(state.count)
        value = jnp.asarray(value).astype(dtype)
        mean = state.avg_value + (value - state.avg_value) / count.astype(dtype)  # running mean
        judged = judge(state, mean)
        waiting = state._replace(count=count, avg_value=mean)
        ready = count >= accumulation_size
        state = jax.tree.map(lambda a, b: jnp.where(ready, a, b), judged, waiting)
        return tree.scaled(updates, state.scale), state

    return GradientTransformation(init, update)
