"""What GaLore's sign alignment costs: optjax's GaLore step with and without it, beside optax's,
under either of XLA:CPU's instruction schedules.

    python benchmarks/galore_alignment.py                    # the mixed tree, 11 trials
    python benchmarks/galore_alignment.py --schedule depth   # XLA's memory-lean schedule
    python benchmarks/galore_alignment.py --quick            # tiny tree, a format check

At a projector refresh (every 200 steps by default) optjax turns each new singular vector to
agree in sign with the one it replaces (see optjax/contrib/_galore.py). The refresh runs in a
branch the timed steps skip, yet it shapes the program XLA builds for the whole step: with the
alignment, the branch gives the projector of a wide matrix in the layout the projections read;
without it (and in optax's GaLore) XLA copies that projector to the transposed layout and back
on every step. The copies also make those matrices' steps one operation longer, and XLA:CPU's
default schedule (breadth first, for concurrency) orders the step by that length: with the
copies it applies some matrices' full-size updates before it forms the others', without them
it forms every full-size update before applying any, which needs more scratch memory on each
call ("temp kB", from XLA's memory analysis of the compiled step). glibc's malloc maps a block
of more than 32 MiB fresh on every call, and each page of it faults in when first written
("faults/step": minor page faults per step, from getrusage, for the whole process).

``--schedule depth`` compiles every step here with XLA's depth-first schedule instead (it adds
--xla_cpu_enable_concurrency_optimized_scheduler=false to XLA_FLAGS for this process), which
keeps the scratch small for all of them. "without" is optjax's GaLore with the alignment
left out for the run (`_galore._aligned` returns the new vectors as LAPACK gives them, as
optax keeps them). The steps are timed side by side as in catalogue_step.py (interleaved
trials, medians).
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

import optjax
from optjax.contrib import _galore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import catalogue_step
import optimizer_step as step_bench

# XLA flags per schedule: read when JAX's backend starts (a per-compile option does not reach it).
SCHEDULES = {
    "breadth": "",  # XLA:CPU's default
    "depth": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
}


def _without_alignment(new, old):
    del old
    return new


def cases(tree: str, quick: bool) -> tuple[dict, int]:
    params_np, grads_np = step_bench.make_arrays(step_bench.tree_shapes(tree, quick), 0)
    n_params = sum(p.size for p in params_np)
    inputs = {"grads": catalogue_step.as_tree(grads_np), "value": jnp.asarray(0.5, jnp.float32)}

    def case(tx):
        params = catalogue_step.as_tree(params_np)
        state = catalogue_step.own_buffers(tx.init(params))
        step = catalogue_step.step_function(tx, takes_value=False)
        return step_bench.JaxCase(step, params, state, inputs, n_params)

    out = {"optjax": case(optjax.contrib.galore(1e-3))}
    aligned = _galore._aligned
    _galore._aligned = _without_alignment
    try:  # the step is traced (and compiled) here, with the alignment left out
        out["optjax without alignment"] = case(optjax.contrib.galore(1e-3))
    finally:
        _galore._aligned = aligned
    out["optax"] = case(optax.contrib.galore(1e-3))
    return out, n_params


def faults_per_step(case, steps: int) -> float:
    """Minor page faults of the whole process per step, over ``steps`` steps."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    case.run(steps)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny tree, 3 trials")
    parser.add_argument("--tree", default="mixed", choices=["single", "mixed"])
    parser.add_argument(
        "--schedule",
        default="breadth",
        choices=sorted(SCHEDULES),
        help="XLA:CPU's instruction schedule: breadth (its default) or depth first",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    catalogue_step.add_xla_flags(SCHEDULES[args.schedule])  # before JAX's backend starts
    if args.quick:
        catalogue_step.compile_fast()
    trials, min_trial_s, fault_steps = (3, 0.003, 3) if args.quick else (11, 0.1, 20)
    found, n_params = cases(args.tree, args.quick)
    timed = step_bench.time_cases(found, trials, min_trial_s)
    optax_s = timed["optax"]["median_s"]
    lines = [
        f"tree: {args.tree} ({n_params:,} parameters), {trials} trials, "
        f"{args.schedule}-first schedule",
        "",
        "| step | ms/step | optax/this | XLA B/param | temp kB | faults/step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, case in found.items():
        median = timed[name]["median_s"]
        xla = case.xla_bytes / n_params
        xla_text = f"{xla:.1f}" if np.isfinite(xla) else "-"
        temp = f"{case.temp_bytes / 1e3:.0f}" if np.isfinite(case.temp_bytes) else "-"
        faults = faults_per_step(case, fault_steps)
        lines.append(
            f"| {name} | {1e3 * median:.3f} | {optax_s / median:.2f} | {xla_text} | {temp} "
            f"| {faults:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
