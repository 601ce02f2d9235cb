"""What GaLore's sign alignment costs: optjax's GaLore step with and without it, beside optax's.

    python benchmarks/galore_alignment.py            # the mixed tree, 11 trials
    python benchmarks/galore_alignment.py --quick    # tiny tree, a format check

At a projector refresh (every 200 steps by default) optjax turns each new singular vector to
agree in sign with the one it replaces (see optjax/contrib/_galore.py), which reads the old
projector inside the refresh branch. The steps timed here skip that branch, yet its reading the
old projector changes the program XLA builds for the whole step. "without" is optjax's GaLore
with the alignment left out for the run (`_galore._aligned` returns the new vectors as LAPACK
gives them, as optax keeps them); "one row" reads one row of the old projector instead, to
tell reading the projector from the alignment's arithmetic. The three steps and optax's are
timed side by side as in catalogue_step.py (interleaved trials, medians).
"""

from __future__ import annotations

import argparse
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


def _without_alignment(new, old):
    del old
    return new


def _one_row(new, old):
    return new * jnp.sign(old[:1, :] + 2)  # reads a row of the old projector; the sign is 1


VARIANTS = {
    "optjax": None,
    "optjax without alignment": _without_alignment,
    "optjax reading one row": _one_row,
}


def cases(tree: str, quick: bool) -> tuple[dict, int]:
    params_np, grads_np = step_bench.make_arrays(step_bench.tree_shapes(tree, quick), 0)
    n_params = sum(p.size for p in params_np)
    inputs = {"grads": catalogue_step.as_tree(grads_np), "value": jnp.asarray(0.5, jnp.float32)}

    def case(tx):
        params = catalogue_step.as_tree(params_np)
        state = catalogue_step.own_buffers(tx.init(params))
        step = catalogue_step.step_function(tx, takes_value=False)
        return step_bench.JaxCase(step, params, state, inputs, n_params)

    out = {}
    aligned = _galore._aligned
    for name, replacement in VARIANTS.items():
        _galore._aligned = replacement or aligned
        try:  # the step is traced (and compiled) here, with the replacement in place
            out[name] = case(optjax.contrib.galore(1e-3))
        finally:
            _galore._aligned = aligned
    out["optax"] = case(optax.contrib.galore(1e-3))
    return out, n_params


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny tree, 3 trials")
    parser.add_argument("--tree", default="mixed", choices=["single", "mixed"])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        catalogue_step.compile_fast()
    trials, min_trial_s = (3, 0.003) if args.quick else (11, 0.1)
    found, n_params = cases(args.tree, args.quick)
    timed = step_bench.time_cases(found, trials, min_trial_s)
    optax_s = timed["optax"]["median_s"]
    lines = [
        f"tree: {args.tree} ({n_params:,} parameters), {trials} trials",
        "",
        "| step | ms/step | optax/this | XLA B/param |",
        "|---|---:|---:|---:|",
    ]
    for name, case in found.items():
        median = timed[name]["median_s"]
        xla = case.xla_bytes / n_params
        xla_text = f"{xla:.1f}" if np.isfinite(xla) else "-"
        lines.append(f"| {name} | {1e3 * median:.3f} | {optax_s / median:.2f} | {xla_text} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
