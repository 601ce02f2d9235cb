"""Many runs in one program: 5 seeds trained at once (jax.vmap inside one jitted program) against
5 separate single-seed runs of the same length, each as a user would start it (a fresh optimizer,
so its own compile). Prints the wall times and their ratio, with compile and step time apart.

    python benchmarks/vmap_seeds.py            # MLP on MNIST, Adam 1e-3, 3000 steps of batch 100
    python benchmarks/vmap_seeds.py --quick    # a tiny run that checks the output format
"""

from __future__ import annotations

import argparse
import sys
import time

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="a tiny run (10 steps): checks the format only"
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    steps = 10 if args.quick else args.steps
    seeds = list(range(args.seeds))

    dataset = load_dataset("mnist", args.data_dir)
    print(
        header(
            "python benchmarks/vmap_seeds.py "
            + " ".join(argv if argv is not None else sys.argv[1:])
        )
    )
    print(
        f"setup: {args.model} on MNIST, adam(1e-3), {steps} steps of batch {args.batch_size}, "
        f"seeds {seeds}\n"
    )
    # Warm-up: JAX's runtime and the eager init ops, shared by both ways below.
    train(args.model, optjax.adam(1e-3), dataset, steps=1, batch_size=args.batch_size, seeds=[0])

    rows = [
        ("vmapped, one program", timed_runs(dataset, [seeds], steps, args.batch_size, args.model)),
        (
            "sequential, one run per seed",
            timed_runs(dataset, [[s] for s in seeds], steps, args.batch_size, args.model),
        ),
    ]
    print("| how | wall (s) | compile (s) | steps (s) | mean test accuracy % |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (wall, compile_s, step_s, acc) in rows:
        print(
            f"| {name} | {wall:.2f} | {compile_s:.2f} | {step_s:.2f} "
            f"| {100 * sum(acc) / len(acc):.2f} |"
        )
    (vmapped, *_), (sequential, *_) = rows[0][1], rows[1][1]
    print(f"\nratio vmapped / sequential wall time: {vmapped / sequential:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
