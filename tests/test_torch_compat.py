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

Muon is the exception: torch runs its Newton-Schulz iteration in bfloat16, and a float32 sum
taken in another order than torch's (its matrix products) rounds to the neighbouring bfloat16
value a few times in a run (about 1 in 10^4 roundings). Each such flip moves one element of the
orthogonalised update by 2^-8 of itself, so the parameter by lr r 2^-8 |O_ij|: the replays stay
within 1e-3, and Muon's tolerance is 3e-3 (its Newton-Schulz alone matches torch's bit for bit
on the recorded matrices: test_muon_newton_schulz_is_torchs). ASGD's averages ``ax`` are checked
as trajectories too (named ``ax_<param>``), and LBFGS's runs on the noiseless objective
(value_fn, whose gradient is the recorder's rule exactly).
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
    "Adafactor", "Rprop", "ASGD", "LBFGS", "Muon",
]  # fmt: skip
TOLERANCE = 1e-5
TOLERANCES = {"Muon": 3e-3}  # bfloat16 Newton-Schulz: see the module doc
FLOOR = 1e-3  # |p| below this counts as 1e-3 in the relative deviation


def tolerance(name: str) -> float:
    return TOLERANCES.get(name, TOLERANCE)


@functools.cache
def golden(name: str) -> dict:
    with np.load(GOLDEN / f"torch_{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    recorded = [k[len("p0_") :] for k in arrays if k.startswith("p0_")]  # the recorder's order
    return {"meta": meta, "arrays": arrays, "names": sorted(recorded), "order": recorded}


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
    setting = meta["settings"][index]
    sign = -1.0 if setting.get("maximize", False) else 1.0
    kappa = meta["kappa"]
    # LBFGS's closure: value_fn, unless a step evaluates nothing (max_iter 1, no line search).
    closure = name == "LBFGS" and (setting.get("max_iter", 20) > 1 or "line_search_fn" in setting)

    def grad(p, a, c, noise_t):  # the recorded rule, in the recorder's float32 order
        d = p - c
        return sign * (a * d + kappa * (d * d * d)) + noise_t

    def run(inputs):
        params, const, noise = inputs
        extras = {"value_fn": objective(const, kappa, golden(name)["order"])} if closure else {}

        def step(carry, noise_t):
            params, state = carry
            grads = {n: grad(params[n], *const[n], noise_t[n]) for n in params}
            updates, state = tx.update(grads, state, params, **extras)
            params = optjax.apply_updates(params, updates)
            out = dict(params)
            if name == "ASGD":
                ax = torch_compat.asgd_average(state)
                out.update({f"ax_{n}": ax[n] for n in ax})
            return (params, state), out

        _, traj = jax.lax.scan(step, (params, tx.init(params)), noise)
        return traj

    return run


def objective(const: dict, kappa: float, order: list[str]):
    """The recorder's LBFGS objective f, whose gradient is its rule exactly (a custom VJP: JAX's
    own derivative of f would round differently), its terms added one at a time in the recorder's
    order (torch's line search interpolates from differences of values: an ulp there can change
    its course)."""

    def rule(p):
        out = {}
        for n in p:
            d = p[n] - const[n][1]
            out[n] = const[n][0] * d + kappa * (d * d * d)
        return out

    @jax.custom_vjp
    def f(p):
        terms = []
        for n in order:
            d = p[n] - const[n][1]
            terms.append(jnp.ravel(const[n][0] * (d * d) / 2 + kappa * (d * d) * (d * d) / 4))
        add = lambda total, term: (total + term, None)
        return jax.lax.scan(add, jnp.zeros([], jnp.float32), jnp.concatenate(terms))[0]

    f.defvjp(lambda p: (f(p), p), lambda p, ct: (jax.tree.map(lambda g: ct * g, rule(p)),))
    return f


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

    def start(x, n):  # p_0, or ax_0 = 0
        return np.zeros_like(x[0][n[3:]]) if n.startswith("ax_") else x[0][n]

    return [
        {n: np.concatenate([start(x, n)[None], np.asarray(traj[n])]) for n in traj}
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
        rel = np.where(np.isnan(rel), np.inf, rel)  # a NaN is as far off as can be
        worst = max(worst, float(np.max(rel)))
    return worst


def build(name: str, index: int, **overrides) -> optjax.GradientTransformation:
    setting = golden(name)["meta"]["settings"][index]
    return getattr(torch_compat, name)(**{**compat_kwargs(name, setting), **overrides})


@pytest.mark.parametrize("name,index", cases(), ids=[f"{n}-{i}" for n, i in cases()])
def test_trajectory_matches_torch(name, index):
    setting = golden(name)["meta"]["settings"][index]
    dev = deviation(name, index, replay_recorded(name)[index])
    assert dev < tolerance(name), f"torch_compat.{name}({setting}): deviation {dev:.3g}"


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
    ("Rprop", 6, "no clip at step 1 (optjax.rprop)", lambda: optjax.rprop(0.5, max_step_size=0.05)),
    ("Rprop", 2, "default etas", lambda: build("Rprop", 2, etas=(0.5, 1.2))),
    ("Rprop", 2, "default step_sizes", lambda: build("Rprop", 2, step_sizes=(1e-6, 50))),
    ("ASGD", 1, "no averaging (default t0)", lambda: build("ASGD", 1, t0=1e6)),
    ("ASGD", 2, "default alpha", lambda: build("ASGD", 2, alpha=0.75)),
    ("ASGD", 2, "no lambd decay", lambda: build("ASGD", 2, lambd=0.0)),
    ("ASGD", 3, "no weight decay", lambda: build("ASGD", 3, weight_decay=0.0)),
    ("ASGD", 5, "constant lr", lambda: build("ASGD", 5, lr=0.1)),
    ("LBFGS", 1, "optax's L-BFGS (optjax.lbfgs)", lambda: optjax.lbfgs(0.5, linesearch=None)),
    ("LBFGS", 2, "history_size 1", lambda: build("LBFGS", 2, history_size=1)),
    ("LBFGS", 4, "no line search", lambda: build("LBFGS", 4, line_search_fn=None)),
    ("LBFGS", 5, "default max_eval", lambda: build("LBFGS", 5, max_eval=None)),
    ("LBFGS", 6, "constant lr", lambda: build("LBFGS", 6, lr=0.5)),
    ("Muon", 1, "no nesterov", lambda: build("Muon", 1, nesterov=False)),
    ("Muon", 3, "original lr adjustment", lambda: build("Muon", 3, adjust_lr_fn=None)),
    (
        "Muon",
        4,
        "default ns_coefficients",
        lambda: build("Muon", 4, ns_coefficients=(3.4445, -4.775, 2.0315)),
    ),
    ("Muon", 5, "no weight decay", lambda: build("Muon", 5, weight_decay=0.0)),
]
MARGIN = {"Muon": 5}  # a mutation must miss by MARGIN x the tolerance (100 unless listed)


@functools.cache
def mutation_deviations() -> tuple[float, ...]:
    trajs = replay([(name, index, make()) for name, index, _, make in MUTATIONS])
    return tuple(deviation(name, index, t) for (name, index, *_), t in zip(MUTATIONS, trajs))


@pytest.mark.parametrize("k", range(len(MUTATIONS)), ids=[f"{m[0]}-{m[2]}" for m in MUTATIONS])
def test_goldens_detect_a_changed_detail(k):
    name, index, what, _ = MUTATIONS[k]
    dev = mutation_deviations()[k]
    assert dev > MARGIN.get(name, 100) * tolerance(name), (
        f"{name} setting {index}: {what}: {dev:.3g}"
    )


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
    ("Rprop", {"lr": -0.01}, "lr", -0.01),
    ("Rprop", {"etas": (1.5, 1.2)}, "etas[0]", 1.5),
    ("Rprop", {"etas": (0.5, 1.0)}, "etas[1]", 1.0),
    ("Rprop", {"etas": 0.5}, "etas", 0.5),
    ("Rprop", {"step_sizes": (-1.0, 50)}, "step_sizes[0]", -1.0),
    ("Rprop", {"step_sizes": (1.0, 0.5)}, "step_sizes", (1.0, 0.5)),
    ("ASGD", {"lr": -0.01}, "lr", -0.01),
    ("ASGD", {"lambd": -1e-4}, "lambd", -1e-4),
    ("ASGD", {"alpha": -0.75}, "alpha", -0.75),
    ("ASGD", {"t0": -1.0}, "t0", -1.0),
    ("ASGD", {"weight_decay": -0.1}, "weight_decay", -0.1),
    ("LBFGS", {"lr": -1.0}, "lr", -1.0),
    ("LBFGS", {"max_iter": 0}, "max_iter", 0),
    ("LBFGS", {"max_eval": 0}, "max_eval", 0),
    ("LBFGS", {"tolerance_grad": -1e-7}, "tolerance_grad", -1e-7),
    ("LBFGS", {"tolerance_change": -1e-9}, "tolerance_change", -1e-9),
    ("LBFGS", {"history_size": 0}, "history_size", 0),
    ("LBFGS", {"line_search_fn": "backtracking"}, "line_search_fn", "backtracking"),
    ("Muon", {"lr": -1e-3}, "lr", -1e-3),
    ("Muon", {"weight_decay": -0.1}, "weight_decay", -0.1),
    ("Muon", {"momentum": 1.5}, "momentum", 1.5),
    ("Muon", {"nesterov": 1}, "nesterov", 1),
    ("Muon", {"ns_coefficients": (1.0, 2.0)}, "ns_coefficients", (1.0, 2.0)),
    ("Muon", {"ns_coefficients": (1.0, 2.0, float("inf"))}, "ns_coefficients[2]", float("inf")),
    ("Muon", {"eps": -1e-7}, "eps", -1e-7),
    ("Muon", {"ns_steps": 100}, "ns_steps", 100),
    ("Muon", {"adjust_lr_fn": "spectral"}, "adjust_lr_fn", "spectral"),
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
    if name == "Muon":  # matrices only
        params = {"w": params["w"], "v": params["w"].T[:2]}
    grads = jax.tree.map(lambda p: 0.5 * p - 0.25, params)
    extras = {}
    if name == "LBFGS":  # the objective whose gradient grads is
        extras["value_fn"] = lambda p: sum(jnp.sum(0.25 * x * x - 0.25 * x) for x in p.values())
    const, sched = fn(), fn(lr=lambda count: jnp.full([], lr, jnp.float32))
    u_const, _ = const.update(grads, const.init(params), params, **extras)
    u_sched, _ = sched.update(grads, sched.init(params), params, **extras)
    for a, b in zip(jax.tree.leaves(u_const), jax.tree.leaves(u_sched)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        assert float(jnp.max(jnp.abs(a))) > 0


# The new presets' own behaviours.


def test_muon_newton_schulz_is_torchs():
    """torch.optim.Muon's orthogonalisation in bfloat16, bit for bit on the recorded matrices
    (a tall one, iterated transposed, and a wide one); optjax.contrib's float32 iteration is
    not it."""
    from optjax._torch_more import _newton_schulz_bf16

    arrays = golden("Muon")["arrays"]
    for i in range(2):
        m, expected = arrays[f"ns_in_{i}"], arrays[f"ns_out_{i}"]
        ours = _newton_schulz_bf16(jnp.asarray(m), (3.4445, -4.7750, 2.0315), 5, 1e-7)
        np.testing.assert_array_equal(np.asarray(ours.astype(jnp.float32)), expected)
        f32 = optjax.contrib.orthogonalize_via_newton_schulz(m, (3.4445, -4.7750, 2.0315))
        assert np.max(np.abs(np.asarray(f32) - expected)) > 1e-3


def test_muon_refuses_what_is_not_a_matrix():
    tx = torch_compat.Muon()
    with pytest.raises(ValueError, match=r"params\['b'\] has shape \(3,\).*2-D"):
        tx.init({"w": jnp.ones((3, 2)), "b": jnp.ones(3)})


def test_muon_with_adamw_for_the_rest():
    """torch's advice, in optjax: Muon for the matrices, AdamW for the others."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    tx = optjax.partition(
        {"muon": torch_compat.Muon(0.02), "adamw": torch_compat.AdamW(1e-3)},
        lambda p: jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adamw", p),
    )
    updates, _ = tx.update(params, tx.init(params), params)
    assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)


def test_asgd_average_is_found_in_a_chain():
    tx = optjax.chain(optjax.identity(), torch_compat.ASGD(lr=0.5, lambd=0.0, t0=0))
    p = jnp.array([4.0])
    state = tx.init(p)
    for _ in range(3):
        u, state = tx.update(p, state, p)
        p = optjax.apply_updates(p, u)
    np.testing.assert_allclose(torch_compat.asgd_average(state), [0.75])
    with pytest.raises(ValueError, match="exactly one"):
        torch_compat.asgd_average(optjax.sgd(0.1).init(p))


def test_lbfgs_asks_for_its_closure():
    """torch's LBFGS re-evaluates f inside a step: without value_fn only max_iter=1 and no line
    search (a step that evaluates nothing) can run."""
    w = jnp.ones(3)
    for tx in (torch_compat.LBFGS(), torch_compat.LBFGS(max_iter=1, line_search_fn="strong_wolfe")):
        with pytest.raises(TypeError, match="value_fn"):
            tx.update(w, tx.init(w), w)
    tx = torch_compat.LBFGS(max_iter=1)
    u, _ = tx.update(w, tx.init(w), w)  # t = min(1, 1/||g||_1) lr, d = -g
    np.testing.assert_allclose(u, -w / 3, rtol=1e-6)


if __name__ == "__main__":  # python tests/test_torch_compat.py: each preset's largest deviation
    import conftest  # noqa: F401  (the suite's XLA flags and dtype promotion)

    for name in NAMES:
        runs = replay_recorded(name)
        worst = max(deviation(name, i, runs[i]) for i in range(len(runs)))
        print(f"{name:<10} largest relative deviation {worst:.2g} (tolerance {tolerance(name):g})")
