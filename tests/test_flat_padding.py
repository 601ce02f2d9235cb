"""The padding of the flat buffers stays exactly zero, whatever the arithmetic of a transform.

With eps = 0, Adam, RMSprop, Adadelta and Adafactor divide 0 by 0 in the padding (its gradient
and moments are 0), where the tree path has no elements. Every optimizer and preset of the
conformance table runs here on a flat layout with partial rows and padding rows: once with eps
= 0 (where it has an eps) and nonzero gradients, once with zero gradients and its defaults.
After a few steps the padding of params, updates and state is zero, and a global reduction
after it (clip_by_global_norm) gives finite updates equal to the tree path's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS

import optjax
from optjax import flat
from optjax import torch_compat as tc

# lr -> the row's optimizer with eps = 0 (None: it has no eps; its row runs as it is).
EPS_ZERO = {
    "sgd": None,
    "sgd_momentum": None,
    "sgd_nesterov": None,
    "adagrad": lambda lr: optjax.adagrad(lr, initial_accumulator_value=0.0, eps=0.0),
    "adadelta": lambda lr: optjax.adadelta(lr, eps=0.0),
    "rmsprop": lambda lr: optjax.rmsprop(lr, eps=0.0),
    "rmsprop_centered": lambda lr: optjax.rmsprop(lr, eps=0.0, centered=True, momentum=0.5),
    "adam": lambda lr: optjax.adam(lr, eps=0.0),
    "adamw": lambda lr: optjax.adamw(lr, eps=0.0, weight_decay=1e-4),
    "nadam": lambda lr: optjax.nadam(lr, eps=0.0),
    "nadamw": lambda lr: optjax.nadamw(lr, eps=0.0, weight_decay=1e-4),
    "amsgrad": lambda lr: optjax.amsgrad(lr, eps=0.0),
    "adamax": lambda lr: optjax.adamax(lr, eps=0.0),
    "adamaxw": lambda lr: optjax.adamaxw(lr, eps=0.0, weight_decay=1e-4),
    "radam": lambda lr: optjax.radam(lr, eps=0.0),
    "lion": None,
    "adafactor": lambda lr: optjax.adafactor(lr, eps=0.0, multiply_by_parameter_scale=False),
    "adabelief": lambda lr: optjax.adabelief(lr, eps=0.0, eps_root=0.0),
    "adan": lambda lr: optjax.adan(lr, eps=0.0, eps_root=0.0),
    "yogi": lambda lr: optjax.yogi(lr, eps=0.0),
    "novograd": lambda lr: optjax.novograd(lr, eps=0.0),
    "sm3": None,
    "lamb": lambda lr: optjax.lamb(lr, eps=0.0),
    "lars": None,
    "fromage": lambda lr: optjax.fromage(lr, min_norm=0.0),
    "sign_sgd": None,
    "signum": None,
    "rprop": None,
    "noisy_sgd": None,
    "optimistic_gradient_descent": None,
    "optimistic_adam": lambda lr: optjax.optimistic_adam(lr, eps=0.0),
    "optimistic_adam_v2": lambda lr: optjax.optimistic_adam_v2(lr, eps=0.0),
    "lbfgs": None,
    "torch.SGD": None,
    "torch.Adam": lambda lr: tc.Adam(lr, eps=0.0, amsgrad=True),
    "torch.AdamW": lambda lr: tc.AdamW(lr, eps=0.0),
    "torch.NAdam": lambda lr: tc.NAdam(lr, eps=0.0),
    "torch.RAdam": lambda lr: tc.RAdam(lr, eps=0.0),
    "torch.Adagrad": lambda lr: tc.Adagrad(lr, eps=0.0),
    "torch.Adadelta": lambda lr: tc.Adadelta(lr, eps=0.0),
    "torch.Adamax": lambda lr: tc.Adamax(lr, eps=0.0),
    "torch.RMSprop": lambda lr: tc.RMSprop(lr, eps=0.0),
    "torch.Adafactor": lambda lr: tc.Adafactor(lr, eps=(0.0, 1e-3)),
}

STEPS = 3


def _params():
    # Block 16: "b" (37) ends in a partial row; 2 padding rows make the 128 rows 130, a multiple
    # of 5.
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(40, 50)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(37,)), jnp.float32),
    }


LAYOUT = flat.FlatLayout.of(_params(), row_multiple=5)


def _grads(zero):
    rng = np.random.default_rng(1)
    return [
        jax.tree.map(
            lambda p: jnp.zeros_like(p) if zero else jnp.asarray(rng.normal(size=p.shape), p.dtype),
            _params(),
        )
        for _ in range(STEPS)
    ]


def _run(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        u, state = tx.update(g, state, params)
        params = optjax.apply_updates(params, u)
    return u, state, params


def _padding(buf):
    """The padding elements of one float32 buffer of LAYOUT."""
    (group,) = LAYOUT.groups
    valid = np.zeros(group.size, bool)
    for size, row in zip(group.sizes, group.row_starts):
        valid[row * group.block : row * group.block + size] = True
    return np.asarray(buf)[~valid]


def test_layout_has_partial_and_padding_rows():
    (group,) = LAYOUT.groups
    assert group.block == 16 and group.rows > group.leaf_rows
    assert any(size % group.block for size in group.sizes)
    assert _padding(LAYOUT.flatten(_params()).buffers[0]).size > 16


@pytest.mark.parametrize("name", ROWS)
def test_padding_stays_zero_and_a_global_norm_matches_the_tree(name):
    def scenarios():
        out = []
        for zero in (False, True):
            make = ROWS[name].make if zero or EPS_ZERO[name] is None else EPS_ZERO[name]
            tx = optjax.chain(make(1e-2), optjax.clip_by_global_norm(1e-3))
            grads = _grads(zero)
            tree = _run(tx, _params(), grads)
            flat_run = _run(tx, LAYOUT.flatten(_params()), [LAYOUT.flatten(g) for g in grads])
            out.append((tree, flat_run))
        return out

    for (tree_u, _, tree_p), (flat_u, flat_state, flat_p) in jax.jit(scenarios)():
        for buffers in (flat_u, flat_p, flat_state):
            found = jax.tree.leaves(buffers, is_leaf=lambda x: isinstance(x, flat.FlatBuffers))
            for fb in found:
                if isinstance(fb, flat.FlatBuffers) and fb.buffers[0] is not None:
                    np.testing.assert_array_equal(_padding(fb.buffers[0]), 0.0)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree_u))
        got = flat_u.unflatten()
        for key in tree_u:
            np.testing.assert_allclose(got[key], tree_u[key], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(flat_p.unflatten()["b"], tree_p["b"], rtol=1e-5, atol=1e-7)
