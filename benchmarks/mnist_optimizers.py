"""The classic optimizer table on MNIST: the 784-100-10 ReLU MLP, batch 100, 3000 steps, with
torch.optim's default hyperparameters (through optjax.torch_compat), 5 seeds per optimizer in
one vmapped program, beside the reference figures of Deep Learning Wizard's "Optimization
Algorithms" tutorial (one PyTorch run per optimizer on this setup; see benchmarks/README.md).

    python benchmarks/mnist_optimizers.py            # the full table (minutes on a 2-core CPU)
    python benchmarks/mnist_optimizers.py --quick    # a tiny run that checks the output format

Inputs are scaled to [0, 1] (no standardisation); weights use torch.nn's default init
(``--init lecun`` for flax's).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import flax
import jax
import numpy as np

import optjax
from optjax import torch_compat
from optjax.train import MLP, load_dataset, train

# (name, the preset as written in torch, the transform, the reference test accuracy in percent)
ROWS = [
    ("SGD", "SGD(lr=0.1)", lambda: torch_compat.SGD(lr=0.1), 95.78),
    (
        "SGD momentum",
        "SGD(lr=0.1, momentum=0.9)",
        lambda: torch_compat.SGD(lr=0.1, momentum=0.9),
        97.69,
    ),
    (
        "SGD Nesterov",
        "SGD(lr=0.1, momentum=0.9, nesterov=True)",
        lambda: torch_compat.SGD(lr=0.1, momentum=0.9, nesterov=True),
        97.58,
    ),
    ("Adam", "Adam()", lambda: torch_compat.Adam(), 97.20),
    ("Adagrad", "Adagrad()", lambda: torch_compat.Adagrad(), 95.51),
    ("Adadelta", "Adadelta()", lambda: torch_compat.Adadelta(), 97.45),
    ("Adamax", "Adamax()", lambda: torch_compat.Adamax(), 96.58),
    ("RMSprop", "RMSprop()", lambda: torch_compat.RMSprop(), 97.1),
]


def header(script: str, argv: list[str] | None) -> str:
    """The command (``python benchmarks/<script>`` with its arguments), machine, versions and
    date, printed above every table."""
    args = argv if argv is not None else sys.argv[1:]
    return "\n".join(
        [
            f"command: python benchmarks/{script} {' '.join(args)}",
            (
                f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
                f"{platform.system()} {platform.release()}; "
                f"device: {jax.devices()[0].device_kind}"
            ),
            (
                f"versions: optjax {optjax.__version__}, jax {jax.__version__}, "
                f"flax {flax.__version__}, "
                f"numpy {np.__version__}, python {platform.python_version()}"
            ),
            f"date: {datetime.date.today().isoformat()}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run (10 steps, 2 seeds): checks the format only",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per optimizer, vmapped")
    p.add_argument("--init", choices=["torch", "lecun"], default="torch")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--only", default=None, help="comma-separated optimizer names (default: all)")
    args = p.parse_args(argv)
    steps, seeds = (10, 2) if args.quick else (args.steps, args.seeds)
    names = [r[0] for r in ROWS]
    only = names if args.only is None else args.only.split(",")
    if set(only) - set(names):
        p.error(
            f"--only: unknown optimizer(s) {sorted(set(only) - set(names))}; choose from {names}"
        )
    rows = [r for r in ROWS if r[0] in only]

    dataset = load_dataset("mnist", args.data_dir)
    print(header("mnist_optimizers.py", argv))
    print(
        f"setup: MLP 784-100-10 ReLU ({args.init} init), inputs in [0, 1], "
        f"batch {args.batch_size}, "
        f"{steps} steps, seeds 0..{seeds - 1} vmapped in one program per optimizer\n"
    )
    print(
        "| optimizer | torch.optim preset | test accuracy % (mean ± std) | reference % "
        "| difference | time (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, preset, make, reference in rows:
        t0 = time.perf_counter()
        result = train(
            lambda rngs: MLP(init=args.init, rngs=rngs),
            make(),
            dataset,
            steps=steps,
            batch_size=args.batch_size,
            seeds=range(seeds),
            log_every=min(500, steps),
        )
        mean, std = 100 * result.mean, 100 * result.std
        print(
            f"| {name} | {preset} | {mean:.2f} ± {std:.2f} | {reference:.2f} "
            f"| {mean - reference:+.2f} "
            f"| {time.perf_counter() - t0:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
