"""L-BFGS: a quasi-Newton direction, then a step size found by a line search.

The update rules live on the primitives: optjax.transforms.lbfgs (the direction) and
optjax.transforms.linesearch (the step size, and `value_and_grad_from_state`).
"""

from __future__ import annotations

from optjax._checks import check_learning_rate
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain, identity
from optjax.transforms.lbfgs import scale_by_lbfgs
from optjax.transforms.linesearch import scale_by_zoom_linesearch
from optjax.transforms.scaling import scale, scale_by_learning_rate

__all__ = ["lbfgs"]

# optax's default: a strong Wolfe search that starts each step from the quasi-Newton step 1.
_ZOOM = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = _ZOOM,
) -> GradientTransformation:
    """L-BFGS: scale_by_lbfgs (the direction P_k g_k, update rule there), then -1 (or
    -learning_rate, a float or a schedule), then ``linesearch`` (by default
    ``scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")``; None
    for no line search).

    With a line search, ``update`` takes the extras ``value=``, ``grad=`` and ``value_fn=`` (see
    optjax.transforms.linesearch); for a deterministic objective, `value_and_grad_from_state`
    reuses the value and gradient the search computed at the point it accepted::

        value_and_grad = optjax.value_and_grad_from_state(f)
        for _ in range(steps):
            value, grad = value_and_grad(params, state=state)
            updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
            params = optjax.apply_updates(params, updates)

    It keeps 2 ``memory_size`` + 3 copies of the parameters: for small and medium problems.

    Example:
        >>> f = lambda w: jnp.sum(w**2)
        >>> tx, w = optjax.lbfgs(), jnp.array([1.0, 2.0, 3.0])
        >>> step = jax.jit(lambda w, state: tx.update(
        ...     jax.grad(f)(w), state, w, value=f(w), grad=jax.grad(f)(w), value_fn=f))
        >>> u, state = step(w, tx.init(w))
        >>> optjax.apply_updates(w, u).round(4)  # step 1: -g / ||g||, the search keeps eta = 1
        Array([0.7327, 1.4655, 2.1982], dtype=float32)
    """
    if learning_rate is not None:
        check_learning_rate("learning_rate", learning_rate)
    scaling = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    return chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        scaling,
        identity() if linesearch is None else linesearch,
    )
