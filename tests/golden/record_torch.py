"""Record torch.optim parameter trajectories for tests/test_torch_compat.py.

Run from the repository root with a Python that has torch 2.13 and NumPy (the tests
themselves never import torch):

    python tests/golden/record_torch.py [Name ...]     (all optimizers, or the ones named)

For each optimizer it writes tests/golden/torch_<Name>.npz holding the problem (initial
params, the gradient rule's constants and its noise sequence), as JSON the settings and the
constructor's signature (defaults, positional order), and for each setting the trajectory
p_0, p_1, ..., p_STEPS of every parameter, all float32.

The problem: four float32 parameters of shapes (8, 6), (2, 3, 4), (5,) and () (the matrix and
the 3-D tensor take Adafactor's factored path), and at step t the gradient

    d = p - c,   g_t = sign * (a * d + KAPPA * (d * d * d)) + noise_t

evaluated in float32 in this order, where a in [0.5, 2], c in [1.5, 2.5] and noise_t ~ 0.1 N(0, 1)
are fixed per element; sign = -1 for settings with maximize=True, so every run descends the same
quartic bowl. Optional ``lr_gamma`` sets a torch LambdaLR schedule lr_t = lr * gamma^t, stepped
after each optimizer step (an optjax schedule of the zero-based step count).

Rprop, ASGD, LBFGS and Muon run on problems of their own (PROBLEMS: smaller, to keep each file
under 100 KB; Muon's has matrices only, as torch.optim.Muon accepts nothing else), drawn the same
way. ASGD's files also hold the averaged parameters ``ax`` (torch's state: 0, then after every
step), as trajectories of parameters named ``ax_<name>``.
LBFGS's problem is deterministic (noise 0: its closure re-evaluates the objective, which makes
sense only without gradient noise); its closure returns the objective

    f(p) = sum over parameters and elements of  a * d * d / 2 + KAPPA * (d * d) * (d * d) / 4

(float32, its terms added one at a time, each parameter's in C order, the parameters in their
order: a sum whose rounding does not depend on a library's reduction order, which matters here, as
torch's line search divides differences of values by small differences of step sizes) and sets
``p.grad`` to the rule above (with noise 0), the exact gradient of f.
"""

from __future__ import annotations

import inspect
import json
import os
import sys

import numpy as np
import torch

STEPS = 60
KAPPA = 0.1
SHAPES = {"w": (8, 6), "k": (2, 3, 4), "b": (5,), "s": ()}
SMALL = {"w": (4, 3), "b": (5,), "s": ()}
# name -> (shapes, noise scale), where not (SHAPES, 0.1)
PROBLEMS = {
    "Rprop": (SMALL, 0.1),
    "ASGD": (SMALL, 0.1),
    "LBFGS": (SMALL, 0.0),
    "Muon": ({"w": (6, 4), "v": (3, 5)}, 0.1),
}
HERE = os.path.dirname(os.path.abspath(__file__))

# Per optimizer, the torch constructor keyword arguments of each recorded setting (tuples as
# lists), plus the optional "lr_gamma" schedule key. Learning rates keep the runs tame.
SETTINGS = {
    "SGD": [
        {},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.5, "maximize": True},
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.2, "lr_gamma": 0.95},
    ],
    "Adam": [
        {},
        {"lr": 0.02},
        {"lr": 0.02, "betas": [0.8, 0.99], "amsgrad": True},
        {"lr": 0.02, "weight_decay": 0.1},
        {"lr": 0.02, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 0.02, "eps": 0.1, "maximize": True},
        {"lr": 0.05, "amsgrad": True, "weight_decay": 0.05, "lr_gamma": 0.96},
    ],
    "AdamW": [
        {},
        {"lr": 0.02, "weight_decay": 0.5},
        {"lr": 0.02, "betas": [0.8, 0.99], "amsgrad": True, "weight_decay": 0.1},
        {"lr": 0.02, "eps": 0.1, "maximize": True},
        {"lr": 0.05, "weight_decay": 0.2, "lr_gamma": 0.96},
    ],
    "NAdam": [
        {},
        {"lr": 0.02},
        {"lr": 0.02, "momentum_decay": 0.1, "betas": [0.8, 0.99]},
        {"lr": 0.02, "weight_decay": 0.1},
        {"lr": 0.02, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 0.02, "eps": 0.1, "maximize": True},
        {"lr": 0.05, "momentum_decay": 0.02, "lr_gamma": 0.96},
    ],
    "RAdam": [
        {},
        {"lr": 0.02},
        {"lr": 0.02, "betas": [0.8, 0.99]},
        {"lr": 0.02, "eps": 0.1},
        {"lr": 0.02, "weight_decay": 0.1},
        {"lr": 0.02, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 0.02, "maximize": True},
        {"lr": 0.05, "lr_gamma": 0.96},
    ],
    "Adagrad": [
        {},
        {"lr": 0.1, "lr_decay": 0.05},
        {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 0.1},
        {"lr": 0.1, "weight_decay": 0.1},
        {"lr": 0.1, "maximize": True},
        {"lr": 0.2, "lr_decay": 0.02, "lr_gamma": 0.97},
    ],
    "Adadelta": [
        {},
        {"rho": 0.5, "eps": 1e-3},
        {"lr": 0.5, "eps": 1e-2, "weight_decay": 0.1},
        {"eps": 1e-3, "maximize": True},
        {"lr": 2.0, "eps": 1e-3, "lr_gamma": 0.97},
    ],
    "Adamax": [
        {},
        {"lr": 0.02},
        {"lr": 0.02, "betas": [0.9, 0.95], "eps": 0.2},
        {"lr": 0.02, "betas": [0.8, 0.9], "weight_decay": 0.1},
        {"lr": 0.02, "maximize": True},
        {"lr": 0.05, "lr_gamma": 0.96},
    ],
    "RMSprop": [
        {},
        {"lr": 0.01, "alpha": 0.9, "eps": 0.1},
        {"lr": 0.01, "centered": True},
        {"lr": 0.005, "momentum": 0.9},
        {"lr": 0.005, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "momentum": 0.5, "lr_gamma": 0.96},
    ],
    "Adafactor": [
        {},
        {"lr": 0.15},
        {"lr": 0.05, "beta2_decay": -0.5, "eps": [0.2, 1e-2]},
        {"lr": 0.1, "d": 1.5, "weight_decay": 0.1},
        {"lr": 0.05, "maximize": True},
        {"lr": 0.25, "lr_gamma": 0.97},
    ],
    # torch's Rprop reads lr once, when it creates the state: the schedule of setting 5 is
    # ignored after step 0, and its run is setting 1's.
    "Rprop": [
        {},
        {"lr": 0.05},
        {"lr": 0.01, "etas": [0.3, 1.5], "step_sizes": [1e-3, 0.05]},
        {"lr": 0.02, "maximize": True},
        {"lr": 0.1, "etas": [0.5, 1.1], "step_sizes": [0, 0.2]},
        {"lr": 0.05, "lr_gamma": 0.5},
        {"lr": 0.5, "step_sizes": [1e-6, 0.05]},
    ],
    "ASGD": [
        {},
        {"lr": 0.05, "t0": 10},
        {"lr": 0.1, "lambd": 0.1, "alpha": 0.5, "t0": 5},
        {"lr": 0.05, "weight_decay": 0.1, "t0": 20},
        {"lr": 0.05, "maximize": True, "t0": 10},
        {"lr": 0.1, "lambd": 1e-3, "t0": 10, "lr_gamma": 0.95},
    ],
    "LBFGS": [
        {},
        {"lr": 0.5, "max_iter": 1},
        {"lr": 0.3, "max_iter": 4, "history_size": 2},
        {"line_search_fn": "strong_wolfe"},
        {
            "lr": 0.1,
            "max_iter": 2,
            "max_eval": 20,
            "history_size": 2,
            "line_search_fn": "strong_wolfe",
        },
        {"lr": 0.2, "max_iter": 3, "max_eval": 2, "tolerance_change": 1e-4},
        {"lr": 0.5, "max_iter": 2, "lr_gamma": 0.9},
        {"lr": 30.0, "max_iter": 3, "max_eval": 25, "line_search_fn": "strong_wolfe"},
    ],
    "Muon": [
        {},
        {"lr": 0.02},
        {"lr": 0.02, "nesterov": False, "weight_decay": 0.0},
        {"lr": 0.02, "momentum": 0.8, "adjust_lr_fn": "match_rms_adamw"},
        {"lr": 0.02, "ns_coefficients": [2.0, -1.5, 0.5], "ns_steps": 3, "eps": 1e-3},
        {"lr": 0.05, "weight_decay": 0.5, "lr_gamma": 0.95},
    ],
}


def problem(seed: int = 0, shapes=SHAPES, noise: float = 0.1) -> dict[str, np.ndarray]:
    """Initial params, the gradient rule's constants and noise, keyed 'p0_w', 'a_w', ..."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        c = rng.uniform(1.5, 2.5, shape)
        out[f"c_{name}"] = c
        out[f"p0_{name}"] = c + rng.uniform(-0.8, 0.8, shape)
        out[f"a_{name}"] = rng.uniform(0.5, 2.0, shape)
        out[f"noise_{name}"] = noise * rng.standard_normal((STEPS, *shape))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


IMPLEMENTATION_SWITCHES = {"foreach", "fused", "capturable", "differentiable"}


def torch_signature(name: str) -> tuple[dict, list[str]]:
    """The constructor's defaults in order, less params and the implementation switches, and
    the names it takes by position after params (switches included)."""
    parameters = list(inspect.signature(getattr(torch.optim, name).__init__).parameters.values())
    parameters = [p for p in parameters if p.name not in ("self", "params")]
    defaults = {p.name: p.default for p in parameters if p.name not in IMPLEMENTATION_SWITCHES}
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    return defaults, positional


def torch_kwargs(setting: dict) -> dict:
    kwargs = {k: v for k, v in setting.items() if k != "lr_gamma"}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _objective(params: dict, const: dict, sign: float, t: int) -> torch.Tensor:
    """Set each ``p.grad`` to the gradient rule at step t; return LBFGS's f (see the doc)."""
    total = torch.zeros((), dtype=torch.float32)
    for n, p in params.items():
        d = p.detach() - const[f"c_{n}"]
        g = const[f"a_{n}"] * d + KAPPA * (d * d * d)
        p.grad = sign * g + const[f"noise_{n}"][t]
        dd = d * d
        for term in (const[f"a_{n}"] * dd / 2 + KAPPA * dd * dd / 4).reshape(-1):
            total = total + term
    return total


def run(name: str, setting: dict, prob: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trajectory of every parameter under torch.optim.<name>(**setting) (for ASGD also
    its averages, keyed 'ax_<param>')."""
    names = [k[len("p0_") :] for k in prob if k.startswith("p0_")]
    params = {n: torch.nn.Parameter(torch.from_numpy(prob[f"p0_{n}"].copy())) for n in names}
    const = {k: torch.from_numpy(v) for k, v in prob.items() if not k.startswith("p0_")}
    kwargs = torch_kwargs(setting)
    if name not in ("Adafactor", "LBFGS", "Muon"):
        kwargs["foreach"] = False  # the single-tensor implementation
    opt = getattr(torch.optim, name)(list(params.values()), **kwargs)
    gamma = setting.get("lr_gamma")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: gamma**t) if gamma else None
    sign = -1.0 if setting.get("maximize", False) else 1.0
    traj = {n: [p.detach().clone().numpy()] for n, p in params.items()}
    averages = {n: [np.zeros_like(prob[f"p0_{n}"])] for n in params}  # ax_0 = 0
    for t in range(STEPS):
        if name == "LBFGS":
            opt.step(lambda t=t: _objective(params, const, sign, t))
        else:
            with torch.no_grad():
                _objective(params, const, sign, t)
            opt.step()
        if sched is not None:
            sched.step()
        for n, p in params.items():
            traj[n].append(p.detach().clone().numpy())
            if name == "ASGD":
                averages[n].append(opt.state[p]["ax"].clone().numpy())
    out = {n: np.stack(v).astype(np.float32) for n, v in traj.items()}
    if name == "ASGD":
        out.update({f"ax_{n}": np.stack(v).astype(np.float32) for n, v in averages.items()})
    return out


def newton_schulz_cases() -> dict[str, np.ndarray]:
    """torch.optim.Muon's orthogonalisation (default coefficients and steps) of two fixed
    float32 matrices, a tall one and a wide one: 'ns_in_<i>' and its result 'ns_out_<i>' (the
    bfloat16 result, exactly, as float32)."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    rng = np.random.default_rng(1)
    out = {}
    for i, shape in enumerate([(12, 7), (5, 9)]):
        m = rng.standard_normal(shape).astype(np.float32)
        o = _zeropower_via_newtonschulz(torch.from_numpy(m), (3.4445, -4.7750, 2.0315), 5, 1e-7)
        out[f"ns_in_{i}"], out[f"ns_out_{i}"] = m, o.float().numpy()
    return out


def main(names: list[str]) -> None:
    if not torch.__version__.startswith("2.13"):
        sys.exit(f"the goldens mirror torch 2.13, this is torch {torch.__version__}")
    torch.set_num_threads(1)
    for name in names or SETTINGS:
        settings = SETTINGS[name]
        shapes, noise = PROBLEMS.get(name, (SHAPES, 0.1))
        prob = problem(shapes=shapes, noise=noise)
        arrays = dict(prob)
        defaults, positional = torch_signature(name)
        arrays["meta"] = np.array(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "steps": STEPS,
                    "kappa": KAPPA,
                    "defaults": defaults,
                    "positional": positional,
                    "settings": settings,
                }
            )
        )
        if name == "Muon":  # torch's Newton-Schulz alone, on two fixed matrices
            arrays.update(newton_schulz_cases())
        for i, setting in enumerate(settings):
            traj = run(name, setting, prob)
            if not all(np.isfinite(v).all() for v in traj.values()):
                sys.exit(f"{name} setting {i} {setting}: non-finite trajectory")
            for n, v in traj.items():
                arrays[f"traj{i}_{n}"] = v
        path = os.path.join(HERE, f"torch_{name}.npz")
        np.savez_compressed(path, **arrays)
        print(f"{path}: {len(settings)} settings, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
