"""One table, every optimizer, the same checks. Adding an optimizer means adding a row.

Each row: a factory ``lr -> GradientTransformation`` and the learning rates and step counts with
which it reaches the minimum of the ill-conditioned quadratic f = 0.1 x1^2 + 2 x2^2 and of the
Rosenbrock function from (-1, 1). The rates are ordinary hyperparameters for each method; the
bar (distance to the minimiser) is the same for all. A row whose update takes the objective
(a loss ``value=``, a ``value_fn=`` to search along) is given it as a training loop would: the
convergence checks give the function they minimise, the other tables ``tree_loss``.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optjax
from optjax import torch_compat as tc


def tree_loss(params):
    """The objective the per-row tables hand the rows that take one (their gradients are drawn
    at random, not this function's: a loss value and a function to search along are all those
    rows need there): half the sum of |p|^2 over every leaf, in float32 at least."""
    leaves = [jnp.asarray(p) for p in jax.tree.leaves(params)]
    dtype = optjax.tree.compute_dtype(*(p.dtype for p in leaves))
    return 0.5 * sum(jnp.sum(jnp.abs(p.astype(dtype)) ** 2) for p in leaves)


def with_objective(tx, f, args) -> optjax.GradientTransformation:
    """``tx`` given, beside the gradients, what a training loop hands an optimizer that needs
    the objective: ``args`` among value=f(params), grad= (the gradient passed) and value_fn=f.
    Flat-ready when ``tx`` is (``f`` is a sum over the leaves: the padding adds 0)."""

    def update(grads, state, params=None):
        given = {"value": lambda: f(params), "grad": lambda: grads, "value_fn": lambda: f}
        return tx.update(grads, state, params, **{name: given[name]() for name in args})

    wrapped = optjax.GradientTransformation(tx.init, update)
    return optjax.flat.mark_flat_ready(wrapped) if optjax.flat.is_flat_ready(tx) else wrapped


class Row(NamedTuple):
    factory: Callable  # learning rate -> GradientTransformation
    quadratic: tuple[float, int]  # (learning rate, steps) to reach the quadratic's minimum
    rosenbrock: tuple[float, int]  # (learning rate, steps) to reach Rosenbrock's minimum
    # What the update takes beside the gradients (value, grad, value_fn): the row's optimizer
    # is stepped with them, from the objective a test names or else tree_loss.
    objective: tuple[str, ...] = ()

    def make(self, lr, objective=tree_loss) -> optjax.GradientTransformation:
        return self.given_objective(self.factory(lr), objective)

    def given_objective(self, tx, objective=tree_loss) -> optjax.GradientTransformation:
        """``tx`` (this row's optimizer, or a variant of it) stepped as the row's is."""
        return with_objective(tx, objective, self.objective) if self.objective else tx


def batch_of_one() -> optjax.GradientTransformation:
    """Ordinary gradients as the per-example gradients of a batch of one (a flat-ready reshape,
    so a DP row runs on the flat layout too)."""
    return optjax.flat.mark_flat_ready(
        optjax.stateless(lambda g, p: jax.tree.map(lambda x: x[None], g))
    )


def gauss_newton_diagonal() -> optjax.GradientTransformation:
    """A Hessian-diagonal estimate that needs no objective function: g * g (Sophia-G's, for a
    batch of one), so that Sophia runs where only gradients are passed."""
    return optjax.stateless(lambda g, p: jax.tree.map(lambda x: x * x, g))


def muon_with_adamw(lr) -> optjax.GradientTransformation:
    """torch.Muon on the matrices, torch.AdamW on every other leaf."""
    return optjax.partition(
        {"muon": tc.Muon(lr), "adamw": tc.AdamW(lr)},
        lambda params: jax.tree.map(lambda p: "muon" if jnp.ndim(p) == 2 else "adamw", params),
    )


ROWS = {
    "sgd": Row(lambda lr: optjax.sgd(lr), (0.3, 300), (1e-3, 20000)),
    "sgd_momentum": Row(lambda lr: optjax.sgd(lr, momentum=0.9), (0.03, 300), (1e-3, 2000)),
    "sgd_nesterov": Row(lambda lr: optjax.sgd(lr, 0.9, nesterov=True), (0.03, 300), (1e-3, 2000)),
    "adagrad": Row(lambda lr: optjax.adagrad(lr), (0.3, 300), (0.3, 10000)),
    "adadelta": Row(lambda lr: optjax.adadelta(lr, eps=1e-4), (0.3, 1000), (3e-3, 10000)),
    "rmsprop": Row(lambda lr: optjax.rmsprop(lr), (3e-3, 3000), (1e-3, 10000)),
    "rmsprop_centered": Row(
        lambda lr: optjax.rmsprop(lr, centered=True, momentum=0.5), (1e-3, 1000), (1e-3, 5000)
    ),
    "adam": Row(lambda lr: optjax.adam(lr), (0.1, 300), (1e-2, 2000)),
    "adamw": Row(lambda lr: optjax.adamw(lr, weight_decay=1e-4), (0.1, 300), (1e-2, 2000)),
    "nadam": Row(lambda lr: optjax.nadam(lr), (0.1, 300), (1e-2, 2000)),
    "nadamw": Row(lambda lr: optjax.nadamw(lr, weight_decay=1e-4), (0.1, 300), (1e-2, 2000)),
    "amsgrad": Row(lambda lr: optjax.amsgrad(lr), (0.1, 300), (1e-2, 5000)),
    "adamax": Row(lambda lr: optjax.adamax(lr), (0.1, 300), (1e-2, 5000)),
    "adamaxw": Row(lambda lr: optjax.adamaxw(lr, weight_decay=1e-4), (0.1, 300), (1e-2, 5000)),
    "radam": Row(lambda lr: optjax.radam(lr), (0.3, 300), (3e-3, 5000)),
    "lion": Row(lambda lr: optjax.lion(lr, weight_decay=0.0), (0.1, 300), (1e-3, 5000)),
    "adafactor": Row(
        lambda lr: optjax.adafactor(lr, multiply_by_parameter_scale=False), (0.1, 300), (3e-3, 5000)
    ),
    # Beyond the classic canon: optax's other optimizers.
    "adabelief": Row(lambda lr: optjax.adabelief(lr), (0.1, 300), (3e-3, 2000)),
    "adan": Row(lambda lr: optjax.adan(lr), (0.1, 1000), (1e-2, 2000)),
    "yogi": Row(lambda lr: optjax.yogi(lr), (0.1, 300), (1e-2, 2000)),
    "novograd": Row(lambda lr: optjax.novograd(lr), (3e-3, 300), (1e-3, 2000)),
    "sm3": Row(lambda lr: optjax.sm3(lr), (0.3, 300), (0.3, 2000)),
    "lamb": Row(lambda lr: optjax.lamb(lr), (0.1, 300), (3e-3, 10000)),
    "lars": Row(lambda lr: optjax.lars(lr), (1.0, 1000), (1.0, 3000)),
    "fromage": Row(lambda lr: optjax.fromage(lr), (0.1, 300), (1e-2, 3000)),
    # Sign descent at a constant rate cycles on Rosenbrock: these decay it.
    "sign_sgd": Row(
        lambda lr: optjax.sign_sgd(optjax.exponential_decay(lr, 1000, 0.5)),
        (1e-2, 3000),
        (3e-3, 10000),
    ),
    "signum": Row(
        lambda lr: optjax.signum(optjax.exponential_decay(lr, 500, 0.5)), (1e-2, 3000), (1e-2, 3000)
    ),
    "rprop": Row(lambda lr: optjax.rprop(lr), (0.1, 300), (0.1, 3000)),
    "noisy_sgd": Row(lambda lr: optjax.noisy_sgd(lr, eta=1e-4, key=0), (0.3, 300), (1e-3, 20000)),
    "optimistic_gradient_descent": Row(
        lambda lr: optjax.optimistic_gradient_descent(lr), (0.1, 300), (3e-4, 30000)
    ),
    "optimistic_adam": Row(lambda lr: optjax.optimistic_adam(lr), (0.1, 300), (3e-3, 5000)),
    "optimistic_adam_v2": Row(lambda lr: optjax.optimistic_adam_v2(lr), (0.1, 300), (3e-3, 5000)),
    "lbfgs": Row(lambda lr: optjax.lbfgs(lr, linesearch=None), (0.5, 50), (0.5, 200)),
    # The rows whose update takes the objective: L-BFGS with its line searches (optax's
    # default, the zoom, and the backtracking one), Polyak's step, MoMo.
    "lbfgs_zoom": Row(
        lambda lr: optjax.lbfgs(lr), (1.0, 30), (1.0, 100), ("value", "grad", "value_fn")
    ),
    "lbfgs_backtracking": Row(
        lambda lr: optjax.lbfgs(
            lr, linesearch=optjax.scale_by_backtracking_linesearch(max_backtracking_steps=15)
        ),
        (1.0, 30),
        (1.0, 300),
        ("value", "grad", "value_fn"),
    ),
    "polyak_sgd": Row(
        lambda lr: optjax.polyak_sgd(max_learning_rate=lr), (1.0, 300), (1e-2, 5000), ("value",)
    ),
    # optax.contrib's. AdEMAMix's slow momentum needs b3 = 0.999 within a few thousand steps (the
    # paper's advice for short runs); Simplified AdEMAMix's momentum is a sum, its steps
    # 1 / (1 - b1) times Adam's. ACProp's denominator is the step before's: at Rosenbrock's
    # start the y-gradient is 0, and eps = 1e-2 bounds the second step. Muon and GaLore send
    # these vector problems to their Adam fallbacks; their dtype, recompilation and wrapper
    # checks run a (4, 3) matrix through Newton-Schulz and the projection.
    "adopt": Row(lambda lr: optjax.adopt(lr), (0.3, 300), (0.1, 2000)),
    "ademamix": Row(lambda lr: optjax.ademamix(lr, b3=0.999), (0.3, 1000), (0.1, 2000)),
    "simplified_ademamix": Row(
        lambda lr: optjax.simplified_ademamix(lr, b1=0.9), (3e-3, 300), (1e-2, 2000)
    ),
    "madgrad": Row(lambda lr: optjax.madgrad(lr), (0.03, 300), (1e-3, 3000)),
    # Adam whose step halves when the loss has not fallen for 10 steps, down to 1/100 (with
    # optax's floor of 0 the scale collapses once the loss stalls near the minimum).
    "reduce_on_plateau": Row(
        lambda lr: optjax.chain(
            optjax.adam(lr), optjax.reduce_on_plateau(factor=0.5, patience=10, min_scale=1e-2)
        ),
        (0.1, 1000),
        (1e-2, 2000),
        ("value",),
    ),
    "momo": Row(lambda lr: optjax.momo(lr), (1.0, 300), (1e-2, 3000), ("value",)),
    "momo_adam": Row(lambda lr: optjax.momo_adam(lr), (1.0, 300), (1e-2, 3000), ("value",)),
    "acprop": Row(lambda lr: optjax.acprop(lr, eps=1e-2), (0.03, 300), (1e-3, 10000)),
    "muon": Row(lambda lr: optjax.muon(lr), (0.1, 300), (1e-2, 2000)),
    "galore": Row(lambda lr: optjax.galore(lr), (0.1, 300), (1e-2, 2000)),
    # Schedule-free SGD is stable at rates plain SGD is not (the quadratic's 4 x2^2 limits SGD
    # to lr < 0.5): the gradient is taken at y, near the average x.
    "schedule_free_sgd": Row(lambda lr: optjax.schedule_free_sgd(lr), (1.0, 1000), (1e-2, 5000)),
    "schedule_free_adamw": Row(lambda lr: optjax.schedule_free_adamw(lr), (0.3, 300), (3e-2, 5000)),
    # The learning-rate-free methods estimate their step: the rate multiplies it, and the rows
    # raise the initial estimate (d_0, r_eps, s_init) so that the 5-step checks see the rate
    # act. COCOB's steps do not depend on the gradient's scale: its rate is 1 / alpha, its
    # first step.
    "prodigy": Row(lambda lr: optjax.prodigy(lr, estim_lr0=1e-3), (1.0, 300), (0.1, 10000)),
    # D-Adaptation AdamW at rate 0.3 circles Rosenbrock's minimum (0.02 to 0.28 away after 500
    # to 3000 steps, with the compile flags deciding which); at 0.1 it stays within 0.035.
    "dadapt_adamw": Row(
        lambda lr: optjax.dadapt_adamw(lr, estim_lr0=1e-3), (1.0, 300), (0.1, 1000)
    ),
    "dog": Row(lambda lr: optjax.dog(lr, init_step=("distance", 1e-3)), (1.0, 1000), (0.3, 10000)),
    "dowg": Row(lambda lr: optjax.dowg(lr), (1.0, 300), (0.1, 10000)),
    "cocob": Row(lambda lr: optjax.cocob(alpha=1 / lr), (0.01, 300), (0.01, 30000)),
    "mechanize": Row(
        lambda lr: optjax.mechanize(optjax.adam(lr), s_init=1e-3), (0.1, 1000), (0.1, 50000)
    ),
    # SAM stops within about rho of the minimum (its ascent never vanishes): rho is small.
    # Sophia's steps are mostly clipped (sign descent, which cycles at a constant rate): its
    # rate decays, and its Hessian estimate is g * g, which needs no objective function.
    "sam": Row(
        lambda lr: optjax.sam(
            optjax.sgd(lr, momentum=0.9), optjax.chain(optjax.normalize(), optjax.sgd(1e-3))
        ),
        (0.03, 600),
        (1e-3, 4000),
    ),
    "sophia": Row(
        lambda lr: optjax.sophia(
            optjax.exponential_decay(lr, 200, 0.5),
            hessian_diagonal_fn=gauss_newton_diagonal(),
            update_interval=1,
        ),
        (0.1, 2000),
        (1e-2, 3000),
    ),
    # DP-SGD on the table's gradients taken as a batch of one example, clipped to norm 1 (which
    # binds on Rosenbrock), without noise (which no fixed bar would survive).
    "dpsgd": Row(
        lambda lr: optjax.chain(
            batch_of_one(), optjax.dpsgd(lr, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
        ),
        (0.3, 300),
        (1e-3, 20000),
    ),
    "torch.SGD": Row(lambda lr: tc.SGD(lr, momentum=0.9, dampening=0.1), (0.03, 300), (1e-3, 2000)),
    "torch.Adam": Row(lambda lr: tc.Adam(lr, amsgrad=True), (0.1, 300), (1e-2, 5000)),
    "torch.AdamW": Row(lambda lr: tc.AdamW(lr), (0.1, 300), (3e-3, 5000)),
    "torch.NAdam": Row(lambda lr: tc.NAdam(lr), (0.1, 300), (3e-3, 5000)),
    "torch.RAdam": Row(lambda lr: tc.RAdam(lr), (0.3, 300), (3e-3, 5000)),
    "torch.Adagrad": Row(lambda lr: tc.Adagrad(lr), (0.3, 300), (0.3, 10000)),
    "torch.Adadelta": Row(lambda lr: tc.Adadelta(lr, eps=1e-4), (0.3, 1000), (3e-3, 10000)),
    "torch.Adamax": Row(lambda lr: tc.Adamax(lr), (0.1, 300), (1e-2, 5000)),
    "torch.RMSprop": Row(lambda lr: tc.RMSprop(lr), (1e-2, 1000), (1e-3, 10000)),
    "torch.Adafactor": Row(lambda lr: tc.Adafactor(lr), (1.0, 1000), (3e-3, 10000)),
    "torch.Rprop": Row(lambda lr: tc.Rprop(lr), (0.1, 300), (0.1, 3000)),
    "torch.ASGD": Row(lambda lr: tc.ASGD(lr), (0.3, 300), (1e-3, 20000)),
    # One iteration per update and no line search: no objective function is needed (with one,
    # tests/test_torch_more.py runs torch's inner loop and line search).
    "torch.LBFGS": Row(lambda lr: tc.LBFGS(lr, max_iter=1), (0.5, 50), (0.5, 200)),
    "torch.LBFGS_strong_wolfe": Row(
        lambda lr: tc.LBFGS(lr, max_iter=4, line_search_fn="strong_wolfe"),
        (1.0, 10),
        (1.0, 50),
        ("value_fn",),
    ),
    # torch's Muon takes matrices only: the rest go to torch's AdamW, as torch's docs advise.
    "torch.Muon": Row(lambda lr: muon_with_adamw(lr), (0.1, 300), (3e-3, 5000)),
}

ROSENBROCK_START = (-1.0, 1.0)


def quadratic(x):
    return 0.1 * x[0] ** 2 + 2.0 * x[1] ** 2


def rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def _minimise(tx, f, x0, steps):
    """Run `steps` jitted steps inside one lax.scan; return the final point."""

    def step(carry, _):
        x, state = carry
        u, state = tx.update(jax.grad(f)(x), state, x)
        return (optjax.apply_updates(x, u), state), None

    x0 = jnp.asarray(x0, jnp.float32)
    (x, _), _ = jax.lax.scan(step, (x0, tx.init(x0)), length=steps)
    return x


@pytest.mark.parametrize("name", ROWS)
def test_converges_on_ill_conditioned_quadratic(name):
    lr, steps = ROWS[name].quadratic
    x = jax.jit(lambda: _minimise(ROWS[name].make(lr, quadratic), quadratic, (3.0, 2.0), steps))()
    assert float(jnp.linalg.norm(x)) < 1e-2, x


@pytest.mark.parametrize("name", ROWS)
def test_converges_on_rosenbrock(name):
    lr, steps = ROWS[name].rosenbrock
    x = jax.jit(
        lambda: _minimise(ROWS[name].make(lr, rosenbrock), rosenbrock, ROSENBROCK_START, steps)
    )()
    assert float(jnp.linalg.norm(x - 1.0)) < 5e-2, x


def _params(dtype):
    return {"w": jnp.ones((4, 3), dtype), "b": jnp.full((3,), 0.5, dtype), "s": jnp.ones((), dtype)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=str)
@pytest.mark.parametrize("name", ROWS)
def test_keeps_dtypes_and_state_structure(name, dtype):
    tx, params = ROWS[name].make(1e-2), _params(dtype)
    state = tx.init(params)
    before = state
    update = tx.update  # op by op: a jitted step traces the same ops (see the next test)
    for _ in range(2):
        grads = jax.tree.map(lambda p: (p * 0.3 + 0.1).astype(dtype), params)
        updates, state = update(grads, state, params)
        params = optjax.apply_updates(params, updates)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, before)
        assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
        assert all(p.dtype == dtype for p in jax.tree.leaves(params))
        assert all(
            bool(jnp.all(jnp.isfinite(p.astype(jnp.float32)))) for p in jax.tree.leaves(params)
        )


@pytest.mark.parametrize("name", ROWS)
def test_second_jitted_step_does_not_recompile(name):
    chex.clear_trace_counter()  # counts are kept per function across the table's rows
    tx = ROWS[name].make(1e-2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        grads = jax.tree.map(lambda p: p * 0.5, params)
        updates, state = tx.update(grads, state, params)
        return optjax.apply_updates(params, updates), state

    params = _params(jnp.float32)
    state = tx.init(params)
    for _ in range(3):
        params, state = step(params, state)


@pytest.mark.parametrize("name", ROWS)
def test_vmap_over_learning_rates_matches_separate_runs(name):
    rates = [1e-3, 3e-2]
    make = ROWS[name].make
    run = lambda lr: _minimise(make(lr, quadratic), quadratic, (3.0, 2.0), 5)
    batched = jax.jit(jax.vmap(run))(jnp.array(rates))
    for i, lr in enumerate(rates):
        separate = jax.jit(functools.partial(run, lr))()  # lr a Python float, as users pass it
        np.testing.assert_allclose(batched[i], separate, rtol=1e-5, atol=1e-7)
    assert not np.allclose(batched[0], batched[1])  # the rates did take effect


# Its line search loops until a condition holds (lax.while_loop), which JAX differentiates
# forward only.
FORWARD_ONLY = {"lbfgs_zoom"}
# torch's strong Wolfe search brackets and interpolates in up to 25 evaluations per step: the
# loss two steps on is piecewise in lr (0.654 at lr = 0.0100, 0.985 at 0.0101), so a finite
# difference measures the jumps, not the derivative within a piece.
PIECEWISE_IN_LR = {"torch.LBFGS_strong_wolfe"}


@pytest.mark.parametrize("name", ROWS)
def test_grad_through_update(name):
    if name in PIECEWISE_IN_LR:
        pytest.skip("the loss after its line search is piecewise in the learning rate")
    make = ROWS[name].make
    differentiate = jax.jacfwd if name in FORWARD_ONLY else jax.grad
    x0 = jnp.array([3.0, 2.0])

    def loss_after_two_steps(lr):
        return quadratic(_minimise(make(lr, quadratic), quadratic, x0, 2))

    lr, h = 1e-2, 1e-3
    d = jax.jit(differentiate(loss_after_two_steps))(lr)
    loss = jax.jit(loss_after_two_steps)  # one program for both evaluations
    finite_difference = (loss(lr + h) - loss(lr - h)) / (2 * h)
    assert bool(jnp.isfinite(d))
    np.testing.assert_allclose(d, finite_difference, rtol=2e-2, atol=1e-3)


# Every optimizer optjax exports, with the rows that run it. Each row's factory calls the
# optimizer named here (read the table above); the test below catches a row removed or renamed.
OPTIMIZERS = {
    **{name: (name,) for name in ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw")},
    **{name: (name,) for name in ("nadam", "nadamw", "amsgrad", "adamax", "adamaxw", "radam")},
    **{name: (name,) for name in ("lion", "adafactor", "adabelief", "adan", "yogi", "novograd")},
    **{name: (name,) for name in ("sm3", "lamb", "lars", "fromage", "sign_sgd", "signum")},
    **{name: (name,) for name in ("rprop", "noisy_sgd", "optimistic_gradient_descent")},
    **{name: (name,) for name in ("optimistic_adam", "optimistic_adam_v2", "polyak_sgd")},
    "lbfgs": ("lbfgs", "lbfgs_zoom", "lbfgs_backtracking"),
    **{name: (name,) for name in ("adopt", "ademamix", "simplified_ademamix", "madgrad")},
    **{name: (name,) for name in ("acprop", "momo", "momo_adam", "muon", "galore", "prodigy")},
    **{name: (name,) for name in ("schedule_free_sgd", "schedule_free_adamw", "dadapt_adamw")},
    "schedule_free": ("schedule_free_sgd", "schedule_free_adamw"),
    **{name: (name,) for name in ("dog", "dowg", "cocob", "mechanize", "sam", "sophia")},
    **{name: (name,) for name in ("reduce_on_plateau", "dpsgd")},
    **{
        f"torch_compat.{name}": (f"torch.{name}",)
        for name in tc.__all__
        if name[0].isupper() and not name.endswith("State")
    },
    "torch_compat.LBFGS": ("torch.LBFGS", "torch.LBFGS_strong_wolfe"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_has_a_row(name):
    module, _, attr = name.rpartition(".")
    assert callable(getattr(optjax.torch_compat if module else optjax, attr)), name
    assert set(OPTIMIZERS[name]) <= set(ROWS), OPTIMIZERS[name]


@pytest.mark.parametrize("name", ROWS)
def test_step_program_grows_linearly_with_the_leaves(name):
    """32 leaves compile to a program about twice as large as 16 do (1.9x to 2.0x; a step that
    copies a total into each leaf's update gives 2.1x to 2.6x here, and four times in the
    limit): the compile of a model with thousands of leaves stays in seconds."""
    tx = ROWS[name].make(1e-2)

    def program_size(leaves):
        params = {f"p{i:03d}": jnp.full((4,), 0.5 + i / 100) for i in range(leaves)}
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        return len(step.lower(params, tx.init(params), params).compile().as_text())

    assert program_size(32) < 2.1 * program_size(16)
