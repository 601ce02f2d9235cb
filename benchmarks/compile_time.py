"""How the compile of one optimizer step grows with the number of leaves, optjax against optax.

    python benchmarks/compile_time.py --optimizers lbfgs,momo --leaves 100,200,400
    python benchmarks/compile_time.py --quick        # two small trees, a format check

The step is catalogue_step.py's (update plus apply, jitted, params and state donated, the loss
value an input where the optimizer takes one), on a tree of N leaves of 64 float32 each (the
"small" tree of optimizer_step.py has 2000). Each compile runs in a process of its own, so that
one that does not finish within ``--limit`` seconds is reported as such (">LIMIT") and the next
still runs; the two libraries' compiles for one N run one after the other. "compile s" is the
time of ``jit(step).lower(...).compile()`` alone; "step ms" the median of 11 timings of the
compiled step, run in the same process after its compile (each timing at least 20 ms of steps
in a row); "program kB" the size of the compiled program's text, which grows linearly with the
leaves where each leaf's update reads only its own leaf and totals computed once. A step whose
compile ran past the limit has no step time ("-").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(optimizer: str, library: str, leaves: int) -> dict:
    """Compile one step in this process, then run it: the compile's seconds, the step's median
    milliseconds and the program's size."""
    sys.path.insert(0, str(HERE))
    import catalogue_step as cat
    import jax
    import jax.numpy as jnp
    import numpy as np

    tx = cat.build(optimizer, library)
    params_np = [np.full((64,), 0.5 + i / leaves, np.float32) for i in range(leaves)]
    params = cat.as_tree(params_np)
    inputs = {"grads": cat.as_tree(params_np), "value": jnp.asarray(0.5, jnp.float32)}
    step = cat.step_function(tx, cat.CATALOGUE[optimizer].takes_value)
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), inputs)
    start = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    state = cat.own_buffers(tx.init(params))

    def steps(reps: int) -> float:  # seconds for `reps` steps in a row
        nonlocal params, state
        start = time.perf_counter()
        for _ in range(reps):
            params, state = compiled(params, state, inputs)
        jax.block_until_ready((params, state))
        return time.perf_counter() - start

    reps = max(1, int(0.02 / steps(1)))  # the first run also pays for loading the program
    step_s = statistics.median(steps(reps) / reps for _ in range(11))
    return {
        "compile_s": seconds,
        "step_ms": 1e3 * step_s,
        "program_kb": len(compiled.as_text()) / 1e3,
    }


def measure(optimizer: str, library: str, leaves: int, limit: float) -> dict | None:
    """`one` in a child process; None if it ran past ``limit`` seconds."""
    command = [sys.executable, __file__, "--one", optimizer, library, str(leaves)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizers", default="lbfgs")
    parser.add_argument("--leaves", default="100,200,400")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per compile")
    parser.add_argument("--quick", action="store_true", help="trees of 4 and 8 leaves")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.one:
        optimizer, library, leaves = args.one
        print(json.dumps(one(optimizer, library, int(leaves))))
        return ""
    sys.path.insert(0, str(HERE))
    from catalogue_step import CATALOGUE

    optimizers = args.optimizers.split(",")
    unknown = [o for o in optimizers if o not in CATALOGUE]
    if unknown:
        parser.error(f"--optimizers must be among catalogue_step.py's, got {unknown}")
    sizes = [4, 8] if args.quick else [int(n) for n in args.leaves.split(",")]
    lines = [
        "| optimizer | leaves | optjax compile s | optax compile s | optjax step ms "
        "| optax step ms | optjax program kB | optax program kB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for optimizer in optimizers:
        for leaves in sizes:
            cells = [measure(optimizer, lib, leaves, args.limit) for lib in ("optjax", "optax")]
            times = [f"{c['compile_s']:.2f}" if c else f">{args.limit:g}" for c in cells]
            steps = [f"{c['step_ms']:.3f}" if c else "-" for c in cells]
            sizes_kb = [f"{c['program_kb']:.0f}" if c else "-" for c in cells]
            cols = " | ".join([*times, *steps, *sizes_kb])
            lines.append(f"| {optimizer} | {leaves} | {cols} |")
            print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
