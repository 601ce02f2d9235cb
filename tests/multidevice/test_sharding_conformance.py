"""The sharding columns of the conformance table: every optimizer, torch preset and wrapper
builds state that follows the parameters on a mesh of 8 devices.

- Auto axes: each state leaf shaped like a parameter carries that parameter's sharding, a
  factored moment the parameter's sharding without its reduced axis, and scalars (step counts,
  hyperparameters) are replicated.
- Explicit axes (what jax.make_mesh gives by default): the state's types (``jax.typeof``, which
  include the sharding) are the same after ``init`` and after a jitted ``update``, for an eager
  and a jitted ``init``, and ``jax.eval_shape(tx.init, ...)`` on abstract parameters that carry
  shardings gives those same types without building the state.

The parameters mix float32 and bf16 leaves, sharded on either axis or replicated, so one
jitted update per row covers both dtypes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from test_conformance import ROWS
from test_conformance_wrappers import WRAPPERS

import optjax

SPECS = {  # float32 and bf16 leaves, sharded on either axis or replicated
    "w": ((16, 8), jnp.float32, P("data", None)),
    "v": ((32,), jnp.float32, P("data")),
    "b": ((8,), jnp.float32, P()),
    "h": ((8, 24), jnp.bfloat16, P(None, "data")),
    "k": ((24, 40), jnp.float32, P("data", None)),  # factored, its row moment is sharded
}
FACTORED = {  # Adafactor with small leaves factored: the two moments of "w", "h" and "k"
    "adafactor_factored": lambda lr: optjax.adafactor(lr, min_dim_size_to_factor=2),
    "torch.Adafactor": ROWS["torch.Adafactor"].make,
}
TABLE = {name: row.make for name, row in ROWS.items()} | FACTORED
TABLE |= {
    f"{name}[{wrapper}]": (lambda lr, w=WRAPPERS[wrapper], m=ROWS[name].make: w(m, lr))
    for wrapper in WRAPPERS
    for name in ("sgd_momentum", "adamw", "adafactor", "lion", "torch.Adam")
}

# Every other wrapper and combinator, around AdamW (and Adafactor, whose factored moments drop
# an axis, in multi_transform).
MASK = {"w": True, "v": False, "b": False, "h": True, "k": True}
LABELS = {"w": "a", "v": "b", "b": "b", "h": "a", "k": "a"}
TABLE |= {
    "apply_if_finite[adamw]": lambda lr: optjax.apply_if_finite(optjax.adamw(lr), 3),
    "average_params[adamw]": lambda lr: optjax.average_params(optjax.adamw(lr), 0.9),
    "lookahead[adamw]": lambda lr: optjax.lookahead(optjax.adamw(lr), 2, 0.5),
    "masked[adamw]": lambda lr: optjax.masked(optjax.adamw(lr), MASK),
    "freeze[adamw]": lambda lr: optjax.chain(optjax.adamw(lr), optjax.freeze(MASK)),
    "multi_transform[adafactor,adamw]": lambda lr: optjax.multi_transform(
        {"a": optjax.adafactor(lr, min_dim_size_to_factor=2), "b": optjax.adamw(lr)}, LABELS
    ),
    "named_chain[clip,adamw]": lambda lr: optjax.named_chain(
        ("clip", optjax.clip_by_global_norm(1.0)), ("adamw", optjax.adamw(lr))
    ),
    "apply_every[adamw]": lambda lr: optjax.chain(optjax.adamw(lr), optjax.apply_every(2)),
    "conditionally_mask[adamw]": lambda lr: optjax.conditionally_mask(
        optjax.adamw(lr), lambda step: step % 2 == 0
    ),
    "monitor[adamw]": lambda lr: optjax.chain(
        optjax.monitor(
            {
                "norm": optjax.tree.global_norm,
                "ema": optjax.measure_with_ema(optjax.tree.global_norm, 0.9),
            }
        ),
        optjax.snapshot("last", optjax.tree.global_norm),
        optjax.adamw(lr),
    ),
    "partition[adafactor,adamw]": lambda lr: optjax.partition(
        {"a": optjax.adafactor(lr, min_dim_size_to_factor=2), "b": optjax.adamw(lr)}, LABELS
    ),
    "selective_transform[adamw]": lambda lr: optjax.selective_transform(
        optjax.adamw(lr), freeze_mask=MASK
    ),
    "inject_stateful_hyperparams[adamw]": lambda lr: optjax.inject_stateful_hyperparams(
        optjax.adamw
    )(learning_rate=lr),
}


def mesh(kind):
    return jax.make_mesh((8,), ("data",), axis_types=(kind,))


def make_params(m):
    rng = np.random.default_rng(0)
    return {
        k: jax.device_put(jnp.asarray(rng.normal(size=shape), dtype), NamedSharding(m, spec))
        for k, (shape, dtype, spec) in SPECS.items()
    }


def expected_spec(path, x):
    """The spec a state leaf should carry: its parameter's (the last dict key on its path, as SM3's
    per-axis accumulators sit in a list under it), or
    for a factored moment its parameter's without the reduced axis (optjax's drops that axis,
    torch's keeps it with size 1)."""
    keys = [k.key for k in path if hasattr(k, "key")]
    if not keys or keys[-1] not in SPECS:  # not a parameter's leaf (L-BFGS's weights_memory)
        return ()
    shape, _, spec = SPECS[keys[-1]]
    spec = tuple(spec) + (None,) * (len(shape) - len(spec))
    if x.shape == shape:
        return spec
    if x.shape[1:] == shape:  # past steps stacked on a leading axis (L-BFGS's memories)
        return (None, *spec)
    for axis in range(len(shape)):
        if x.shape == shape[:axis] + shape[axis + 1 :]:
            return spec[:axis] + spec[axis + 1 :]
        if x.shape == (*shape[:axis], 1, *shape[axis + 1 :]):
            return (*spec[:axis], None, *spec[axis + 1 :])
    return None


def same_placement(spec, want):
    """Equal specs, trailing Nones aside: P("a") places like P("a", None)."""
    return (*spec, None, None, None, None)[:4] == (*want, None, None, None, None)[:4]


def placement(spec):
    """A spec without its trailing Nones: P(None) places like P() (a replicated key's data)."""
    spec = tuple(spec)
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return spec


def spec_of(abstract):
    """An abstract value's spec; one built without a mesh (a scalar step count) is replicated."""
    return P() if abstract.sharding is None else abstract.sharding.spec


# State replicated by design: torch's L-BFGS keeps its history as vectors of all the parameters
# at once (torch's flat view of them), which no one parameter's sharding describes.
REPLICATED = {
    name: "torch.LBFGS's history vectors are replicated"
    for name in ("torch.LBFGS", "torch.LBFGS_strong_wolfe")
}


def galore_spec(path, x):
    """GaLore's state: for a (m, n) matrix, its projector (m x r with m >= n, else n x r) keeps
    the matrix's split of m (or n), the projected moments (r x n, or m x r) its split of n (or
    m), and the rank axis r is whole; a vector's projector is an empty placeholder, and its
    other leaves follow `expected_spec`."""
    keys = [k.key for k in path if hasattr(k, "key")]
    projector = any(getattr(k, "name", None) == "projector" for k in path)
    if not keys or keys[-1] not in SPECS or len(SPECS[keys[-1]][0]) != 2:
        return () if projector and x.shape == (0, 0) else expected_spec(path, x)
    (m, n), _, spec = SPECS[keys[-1]]
    rows, cols = (*spec, None, None)[:2]
    if projector:
        return (rows if m >= n else cols, None)
    return (None, cols) if m >= n else (rows, None)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_auto_mesh_state_follows_the_params(name):
    m = mesh(AxisType.Auto)
    with jax.set_mesh(m):
        state = TABLE[name](1e-2).init(make_params(m))
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        if x.ndim == 0:
            assert x.sharding.is_fully_replicated, (name, jax.tree_util.keystr(path))
            continue
        want = (galore_spec if name == "galore" else expected_spec)(path, x)
        assert want is not None, (name, jax.tree_util.keystr(path), x.shape)
        assert same_placement(x.sharding.spec, want), (name, jax.tree_util.keystr(path))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_explicit_mesh_state_types_are_stable(name):
    m = mesh(AxisType.Explicit)
    tx = TABLE[name](1e-2)
    with jax.set_mesh(m):
        params = make_params(m)
        grads = jax.tree.map(lambda p: p * 0.5, params)
        eager = tx.init(params)
        jitted = jax.jit(tx.init)(params)
        abstract = jax.eval_shape(tx.init, jax.tree.map(jax.typeof, params))
        _, after = jax.jit(tx.update)(grads, eager, params)
    types = [jax.typeof(x) for x in jax.tree.leaves(eager)]
    assert types == [jax.typeof(x) for x in jax.tree.leaves(jitted)]
    assert types == [jax.typeof(x) for x in jax.tree.leaves(after)]
    assert [(t.shape, t.dtype, placement(t.sharding.spec)) for t in types] == [
        (a.shape, a.dtype, placement(spec_of(a))) for a in jax.tree.leaves(abstract)
    ]
    floats = [t for t in types if jnp.issubdtype(t.dtype, jnp.inexact) and t.ndim]
    sharded = any(any(t.sharding.spec) for t in floats)
    if name in REPLICATED:
        assert floats and not sharded, REPLICATED[name]
    elif floats:  # state beyond step counts and random keys: some of it is sharded
        assert sharded, "replicated state passes"
