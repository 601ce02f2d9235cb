"""Record torch.optim parameter trajectories for tests/test_torch_compat.py.

Run from the repository root with a Python that has torch 2.13 and NumPy (the tests
themselves never import torch):

    python tests/golden/record_torch.py

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
}


def problem(seed: int = 0) -> dict[str, np.ndarray]:
    """Initial params, the gradient rule's constants and noise, keyed 'p0_w', 'a_w', ..."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        c = rng.uniform(1.5, 2.5, shape)
        out[f"c_{name}"] = c
        out[f"p0_{name}"] = c + rng.uniform(-0.8, 0.8, shape)
        out[f"a_{name}"] = rng.uniform(0.5, 2.0, shape)
        out[f"noise_{name}"] = 0.1 * rng.standard_normal((STEPS, *shape))
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


def run(name: str, setting: dict, prob: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trajectory of every parameter under torch.optim.<name>(**setting)."""
    params = {n: torch.nn.Parameter(torch.from_numpy(prob[f"p0_{n}"].copy())) for n in SHAPES}
    const = {k: torch.from_numpy(v) for k, v in prob.items() if not k.startswith("p0_")}
    kwargs = torch_kwargs(setting)
    if name != "Adafactor":
        kwargs["foreach"] = False  # the single-tensor implementation
    opt = getattr(torch.optim, name)(list(params.values()), **kwargs)
    gamma = setting.get("lr_gamma")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: gamma**t) if gamma else None
    sign = -1.0 if setting.get("maximize", False) else 1.0
    traj = {n: [p.detach().clone().numpy()] for n, p in params.items()}
    for t in range(STEPS):
        with torch.no_grad():
            for n, p in params.items():
                d = p - const[f"c_{n}"]
                g = const[f"a_{n}"] * d + KAPPA * (d * d * d)
                p.grad = sign * g + const[f"noise_{n}"][t]
        opt.step()
        if sched is not None:
            sched.step()
        for n, p in params.items():
            traj[n].append(p.detach().clone().numpy())
    return {n: np.stack(v).astype(np.float32) for n, v in traj.items()}


def main() -> None:
    if not torch.__version__.startswith("2.13"):
        sys.exit(f"the goldens mirror torch 2.13, this is torch {torch.__version__}")
    torch.set_num_threads(1)
    prob = problem()
    for name, settings in SETTINGS.items():
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
    main()
