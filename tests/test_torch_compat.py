"""optjax.torch_compat against parameter trajectories recorded from torch.optim 2.13.

The oracle is tests/golden/torch_<Name>.npz, written by tests/golden/record_torch.py (the
problem and the gradient rule are described there); torch is not imported here. Each recorded
setting is replayed with the jitted optjax update on the same problem, starting from the same
parameters, for the same number of steps, and its

    deviation = max over steps t and elements i of
                |p_optjax[t, i] - p_torch[t, i]| / max(|p_torch[t, i]|, 1e-3)

must stay below 1e-5 (the replays stay within about 2e-6: float32 rounding, compounded).
Changing any one torch detail (eps placement, dampening at step 1, the AMSGrad maximum, ...)
moves the trajectory by far more than that: see MUTATIONS.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optjax
from optjax import torch_compat

GOLDEN = Path(__file__).parent / "golden"
NAMES = [
    "SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adagrad", "Adadelta", "Adamax", "RMSprop",
    "Adafactor",
]  # fmt: skip
TOLERANCE = 1e-5
FLOOR = 1e-3  # |p| below this counts as 1e-3 in the relative deviation


@functools.cache
def golden(name: str) -> dict:
    with np.load(GOLDEN / f"torch_{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    names = sorted(k[len("p0_") :] for k in arrays if k.startswith("p0_"))
    return {"meta": meta, "arrays": arrays, "names": names}


def cases():
    return [(name, i) for name in NAMES for i in range(len(golden(name)["meta"]["settings"]))]


def compat_kwargs(name: str, setting: dict) -> dict:
    """torch_compat keyword arguments for a recorded setting (lr a schedule with lr_gamma)."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in setting.items()}
    gamma = kwargs.pop("lr_gamma", None)
    if gamma is not None:
        default_lr = inspect.signature(getattr(torch_compat, name)).parameters["lr"].default
        lr = kwargs.get("lr", default_lr)
        kwargs["lr"] = lambda count: lr * jnp.float32(gamma) ** count.astype(jnp.float32)
    return kwargs


def trajectory_fn(name: str, index: int, tx: optjax.GradientTransformation):
    """``run(inputs) -> trajectory`` (to be jitted): tx on the recorded problem for the recorded
    number of steps; ``inputs`` holds the initial params, the rule's constants and its noise."""
    meta = golden(name)["meta"]
    sign = -1.0 if meta["settings"][index].get("maximize", False) else 1.0
    kappa = meta["kappa"]

    def grad(p, a, c, noise_t):  # the recorded rule, in the recorder's float32 order
        d = p - c
        return sign * (a * d + kappa * (d * d * d)) + noise_t

    def run(inputs):
        params, const, noise = inputs

        def step(carry, noise_t):
            params, state = carry
            grads = {n: grad(params[n], *const[n], noise_t[n]) for n in params}
            updates, state = tx.update(grads, state, params)
            params = optjax.apply_updates(params, updates)
            return (params, state), params

        _, traj = jax.lax.scan(step, (params, tx.init(params)), noise)
        return traj

    return run


def replay(jobs: list[tuple[str, int, optjax.GradientTransformation]]) -> list[dict]:
    """Replay each (name, setting index, transform) job, all in one jitted call (one compile:
    compiling is most of the cost); each result is p_0, ..., p_T per parameter, in NumPy."""
    runs, inputs = [], []
    for name, index, tx in jobs:
        arrays, names = golden(name)["arrays"], golden(name)["names"]
        runs.append(trajectory_fn(name, index, tx))
        inputs.append(
            (
                {n: arrays[f"p0_{n}"] for n in names},
                {n: (arrays[f"a_{n}"], arrays[f"c_{n}"]) for n in names},
                {n: arrays[f"noise_{n}"] for n in names},
            )
        )
    outs = jax.jit(lambda inputs: [run(x) for run, x in zip(runs, inputs)])(inputs)
    return [
        {n: np.concatenate([x[0][n][None], np.asarray(traj[n])]) for n in traj}
        for x, traj in zip(inputs, outs)
    ]


@functools.cache
def replay_recorded(name: str) -> list[dict]:
    """Every recorded setting of torch.optim.<name> replayed with torch_compat.<name>."""
    settings = golden(name)["meta"]["settings"]
    return replay([(name, i, build(name, i)) for i in range(len(settings))])


def deviation(name: str, index: int, traj: dict) -> float:
    """max_t,i |p_optjax - p_torch| / max(|p_torch|, FLOOR) against recorded setting index."""
    arrays = golden(name)["arrays"]
    worst = 0.0
    for n, ours in traj.items():
        ref = arrays[f"traj{index}_{n}"].astype(np.float64)
        rel = np.abs(ours.astype(np.float64) - ref) / np.maximum(np.abs(ref), FLOOR)
        worst = max(worst, float(np.max(rel)))
    return worst


def build(name: str, index: int, **overrides) -> optjax.GradientTransformation:
    setting = golden(name)["meta"]["settings"][index]
    return getattr(torch_compat, name)(**{**compat_kwargs(name, setting), **overrides})


@pytest.mark.parametrize("name,index", cases(), ids=[f"{n}-{i}" for n, i in cases()])
def test_trajectory_matches_torch(name, index):
    setting = golden(name)["meta"]["settings"][index]
    dev = deviation(name, index, replay_recorded(name)[index])
    assert dev < TOLERANCE, f"torch_compat.{name}({setting}): deviation {dev:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_recorded_runs_are_informative(name):
    """The goldens are worth matching: enough steps, and every setting moves the parameters by
    far more than the tolerance."""
    g = golden(name)
    assert g["meta"]["steps"] >= 50
    assert g["meta"]["torch"].startswith("2.13")
    for i in range(len(g["meta"]["settings"])):
        trajs = [g["arrays"][f"traj{i}_{n}"] for n in g["names"]]
        moved = max(float(np.max(np.abs(t[-1] - t[0]))) for t in trajs)
        assert moved > 1e-2, f"{name} setting {i} barely moves ({moved:.2g})"


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_torch(name):
    """Argument names, order and defaults are torch's (recorded from its constructor), and an
    argument taken by position here is taken at the same position by torch."""
    meta = golden(name)["meta"]
    parameters = inspect.signature(getattr(torch_compat, name)).parameters.values()
    defaults = {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default for p in parameters
    }  # JSON holds tuples as lists
    assert defaults == meta["defaults"]
    assert list(defaults) == list(meta["defaults"])
    ours = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert ours == meta["positional"][: len(ours)]
    assert not set(meta["positional"][len(ours) :]) & set(ours)


def _chain_lr(lr, *transforms):
    return optjax.chain(*transforms, optjax.scale_by_learning_rate(lr))


# (name, recorded setting, what is changed, the changed transform): each must miss the golden by
# far more than the tolerance, so the goldens pin down every torch detail listed here.
MUTATIONS = [
    (
        "SGD",
        2,
        "dampening also at step 1",
        lambda: _chain_lr(
            0.05, optjax.add_decayed_weights(0.1), optjax.scale(0.5), optjax.trace(0.9)
        ),
    ),
    ("SGD", 3, "no nesterov", lambda: build("SGD", 3, nesterov=False)),
    (
        "Adam",
        2,
        "max of the corrected nu",
        lambda: _chain_lr(0.02, optjax.scale_by_amsgrad(0.8, 0.99)),
    ),
    ("Adam", 3, "decoupled weight decay", lambda: build("Adam", 3, decoupled_weight_decay=True)),
    ("Adam", 6, "constant lr", lambda: build("Adam", 6, lr=0.05)),
    ("NAdam", 2, "default momentum_decay", lambda: build("NAdam", 2, momentum_decay=4e-3)),
    ("NAdam", 1, "constant momentum (optjax.nadam)", lambda: optjax.nadam(0.02)),
    (
        "RAdam",
        3,
        "eps on the corrected nu",
        lambda: _chain_lr(0.02, optjax.scale_by_radam(0.9, 0.999, 0.1)),
    ),
    ("RAdam", 5, "coupled weight decay", lambda: build("RAdam", 5, decoupled_weight_decay=False)),
    ("Adagrad", 1, "no lr_decay", lambda: build("Adagrad", 1, lr_decay=0.0)),
    (
        "Adagrad",
        2,
        "eps inside the root",
        lambda: _chain_lr(0.1, optjax.scale_by_rss(0.5, 0.1, eps_in_sqrt=True)),
    ),
    (
        "Adamax",
        2,
        "eps outside the max",
        lambda: _chain_lr(0.02, optjax.scale_by_adamax(0.9, 0.95, 0.2, eps_in_max=False)),
    ),
    ("RMSprop", 1, "eps inside the root", lambda: optjax.rmsprop(0.01, 0.9, 0.1, eps_in_sqrt=True)),
    ("RMSprop", 2, "not centered", lambda: build("RMSprop", 2, centered=False)),
    ("Adafactor", 2, "default eps[0]", lambda: build("Adafactor", 2, eps=(None, 1e-2))),
    ("Adafactor", 3, "no clipping", lambda: build("Adafactor", 3, d=1e6)),
    ("Adafactor", 3, "no weight decay", lambda: build("Adafactor", 3, weight_decay=0.0)),
]


@functools.cache
def mutation_deviations() -> tuple[float, ...]:
    trajs = replay([(name, index, make()) for name, index, _, make in MUTATIONS])
    return tuple(deviation(name, index, t) for (name, index, *_), t in zip(MUTATIONS, trajs))


@pytest.mark.parametrize("k", range(len(MUTATIONS)), ids=[f"{m[0]}-{m[2]}" for m in MUTATIONS])
def test_goldens_detect_a_changed_detail(k):
    name, index, what, _ = MUTATIONS[k]
    assert mutation_deviations()[k] > 100 * TOLERANCE, f"{name} setting {index}: {what}"


BAD_ARGUMENTS = [
    ("SGD", {"lr": -0.1}, "lr", -0.1),
    ("SGD", {"momentum": -0.5}, "momentum", -0.5),
    ("SGD", {"momentum": 0.9, "dampening": 1.5}, "dampening", 1.5),
    ("SGD", {"weight_decay": -1.0}, "weight_decay", -1.0),
    ("SGD", {"nesterov": True}, "momentum", 0.0),
    ("SGD", {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "dampening", 0.1),
    ("Adam", {"betas": (1.0, 0.999)}, "betas[0]", 1.0),
    ("Adam", {"betas": (0.9, -0.1)}, "betas[1]", -0.1),
    ("Adam", {"betas": (0.9,)}, "betas", (0.9,)),
    ("Adam", {"eps": -1e-8}, "eps", -1e-8),
    ("AdamW", {"lr": float("nan")}, "lr", float("nan")),
    ("AdamW", {"weight_decay": -0.01}, "weight_decay", -0.01),
    ("NAdam", {"momentum_decay": -1.0}, "momentum_decay", -1.0),
    ("NAdam", {"betas": (0.9, 1.0)}, "betas[1]", 1.0),
    ("RAdam", {"weight_decay": -0.1}, "weight_decay", -0.1),
    ("RAdam", {"lr": -1.0}, "lr", -1.0),
    ("Adagrad", {"lr_decay": -0.1}, "lr_decay", -0.1),
    ("Adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value", -1.0),
    ("Adagrad", {"eps": -1e-10}, "eps", -1e-10),
    ("Adadelta", {"rho": 1.5}, "rho", 1.5),
    ("Adadelta", {"eps": -1.0}, "eps", -1.0),
    ("Adamax", {"betas": (-0.1, 0.999)}, "betas[0]", -0.1),
    ("Adamax", {"lr": -2e-3}, "lr", -2e-3),
    ("RMSprop", {"alpha": -0.1}, "alpha", -0.1),
    ("RMSprop", {"momentum": -1.0}, "momentum", -1.0),
    ("RMSprop", {"eps": -1.0}, "eps", -1.0),
    ("Adafactor", {"beta2_decay": 0.5}, "beta2_decay", 0.5),
    ("Adafactor", {"eps": (-1.0, 1e-3)}, "eps[0]", -1.0),
    ("Adafactor", {"eps": (None, -1.0)}, "eps[1]", -1.0),
    ("Adafactor", {"eps": 1e-3}, "eps", 1e-3),
    ("Adafactor", {"d": 0.5}, "d", 0.5),
    ("Adafactor", {"weight_decay": -1.0}, "weight_decay", -1.0),
    ("Adafactor", {"lr": -0.01}, "lr", -0.01),
]


@pytest.mark.parametrize(
    "name,kwargs,argument,value", BAD_ARGUMENTS, ids=[f"{b[0]}-{b[2]}" for b in BAD_ARGUMENTS]
)
def test_invalid_argument_raises_naming_it(name, kwargs, argument, value):
    with pytest.raises(ValueError) as info:
        getattr(torch_compat, name)(**kwargs)
    message = str(info.value)
    assert f"{argument}={value!r}" in message, message


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_and_accept_a_schedule(name):
    """Every preset builds with torch's defaults, and with lr a schedule it steps as with the
    schedule's value (a constant schedule gives the constant's step exactly)."""
    fn = getattr(torch_compat, name)
    lr = inspect.signature(fn).parameters["lr"].default
    params = {"w": jnp.linspace(0.5, 2.0, 12).reshape(3, 4), "b": jnp.array([1.0, -1.0])}
    grads = jax.tree.map(lambda p: 0.5 * p - 0.25, params)
    const, sched = fn(), fn(lr=lambda count: jnp.full([], lr, jnp.float32))
    u_const, _ = const.update(grads, const.init(params), params)
    u_sched, _ = sched.update(grads, sched.init(params), params)
    for a, b in zip(jax.tree.leaves(u_const), jax.tree.leaves(u_sched)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        assert float(jnp.max(jnp.abs(a))) > 0
