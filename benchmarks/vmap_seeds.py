"""Many runs in one program: 5 seeds trained at once (jax.vmap inside one jitted program) against
5 separate single-seed runs of the same length, each as a user would start it. Two ways:

- in one process: train(seeds=[0..4]) against train(seeds=[s]) for each s (each run builds a
  fresh optimizer, so it compiles its own step); repeated, alternating, medians reported;
- from the command line: one `python -m optjax.train ... --seeds 0,1,2,3,4` process against one
  process per seed (each also pays Python's and JAX's start-up and the data loading).

Prints the wall times and their ratio, with compile and step time apart.

    python benchmarks/vmap_seeds.py            # MLP on MNIST, Adam 1e-3, 3000 steps of batch 100
    python benchmarks/vmap_seeds.py --quick    # a tiny run that checks the output format
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from mnist_optimizers import header

import optjax
from optjax.train import load_dataset, train


def timed_runs(dataset, seed_groups, steps, batch_size, model):
    """Train each group of seeds with train(); return the total wall, compile and step seconds."""
    wall = compile_s = step_s = 0.0
    accuracies = []
    for seeds in seed_groups:
        t0 = time.perf_counter()
        result = train(
            model,
            optjax.adam(1e-3),
            dataset,
            steps=steps,
            batch_size=batch_size,
            seeds=seeds,
            log_every=min(500, steps),
        )
        wall += time.perf_counter() - t0
        compile_s += result.compile_seconds
        step_s += steps / result.steps_per_second
        accuracies += [r.test_accuracy for r in result.runs]
    return wall, compile_s, step_s, accuracies


def cli_wall(args, seeds, steps) -> float:
    """Wall seconds of one `python -m optjax.train` process training ``seeds`` at once."""
    command = [
        sys.executable, "-m", "optjax.train", "--dataset", "mnist", "--model", args.model,
        "--optimizer", "adam", "--learning-rate", "1e-3", "--steps", str(steps),
        "--batch-size", str(args.batch_size), "--seeds", ",".join(map(str, seeds)), "--quiet",
    ]  # fmt: skip
    if args.data_dir is not None:
        command += ["--data-dir", args.data_dir]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="a tiny run (10 steps): checks the format only"
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--trials", type=int, default=3, help="in-process trials (median reported)")
    p.add_argument(
        "--processes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the command line, one process per run (default: on, off with --quick)",
    )
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    steps = 10 if args.quick else args.steps
    trials = 1 if args.quick else args.trials
    processes = not args.quick if args.processes is None else args.processes
    seeds = list(range(args.seeds))

    dataset = load_dataset("mnist", args.data_dir)
    print(header("vmap_seeds.py", argv))
    print(
        f"setup: {args.model} on MNIST, adam(1e-3), {steps} steps of batch {args.batch_size}, "
        f"seeds {seeds}; in one process: median of {trials} alternating trials\n"
    )
    # Warm-up, for both ways alike: JAX's runtime and the eager ops of model init.
    for group in ([0], seeds):
        train(
            args.model, optjax.adam(1e-3), dataset, steps=1, batch_size=args.batch_size, seeds=group
        )

    ways = {"vmapped, one program": [seeds], "sequential, one run per seed": [[s] for s in seeds]}
    measured = {name: [] for name in ways}
    for _ in range(trials):
        for name, groups in ways.items():
            measured[name].append(timed_runs(dataset, groups, steps, args.batch_size, args.model))
    print("| how | wall (s) | compile (s) | steps (s) | mean test accuracy % |")
    print("| --- | ---: | ---: | ---: | ---: |")
    walls = {}
    for name, results in measured.items():
        wall, compile_s, step_s = (float(np.median([r[k] for r in results])) for k in range(3))
        acc = results[0][3]
        walls[name] = wall
        print(
            f"| {name} | {wall:.2f} | {compile_s:.2f} | {step_s:.2f} "
            f"| {100 * sum(acc) / len(acc):.2f} |"
        )
    vmapped, sequential = walls.values()
    print(f"\nratio vmapped / sequential wall time, in one process: {vmapped / sequential:.2f}")
    if processes:
        one = cli_wall(args, seeds, steps)
        each = [cli_wall(args, [s], steps) for s in seeds]
        print(
            f"command line: one process for {len(seeds)} seeds {one:.2f} s, one process per seed "
            f"{sum(each):.2f} s ({' + '.join(f'{w:.2f}' for w in each)})"
        )
        print(f"ratio vmapped / sequential wall time, command line: {one / sum(each):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
