"""The speed of one optimizer step for the rest of optax's catalogue, optjax against optax, side
by side; and Muon's Newton-Schulz orthogonalisation alone.

    python benchmarks/catalogue_step.py                      # the full table (many minutes)
    python benchmarks/catalogue_step.py --quick              # tiny trees, a format check (< 1 min)
    python benchmarks/catalogue_step.py --optimizers adan,muon --trees mixed --json out.json

Every optimizer here exists in both libraries (``optax.NAME`` or ``optax.contrib.NAME``) and is
built with the same arguments in each: a learning rate of 1e-3 and the library defaults
otherwise. A step is update plus apply, jitted, with params and optimizer state donated, on the
trees of ``optimizer_step.py`` ("single", "mixed", "small"); the gradients are an input, and so
is the loss value for the optimizers that take ``value=`` (Polyak SGD, MoMo, MoMo-Adam), so XLA
cannot fold it away. The two libraries' steps are timed by ``optimizer_step.py``'s machinery:
trials interleaved in rotating order, so their ratio compares runs under the same load, and the
median over trials. "optax/optjax" is optax's median time over optjax's: 1 or more means optjax's
step is at least as fast. A group whose step is slow (Muon on the 10M-element matrix) runs fewer
trials, never under 3, so that it keeps within ``--group-seconds``; the table prints the count.
"XLA B/param" is the traffic XLA's cost analysis counts for each library's compiled step, per
parameter: equal counts mean the same passes over memory, so a time ratio between them measures
noise or arithmetic, not traffic. A conditional (GaLore's projector and Sophia's Hessian refresh,
which most steps skip) is counted at its costliest branch.

The Newton-Schulz table times each library's ``orthogonalize_via_newton_schulz`` (jitted, five
steps of the default coefficients) on one square matrix, outside any optimizer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib as optax_contrib
from optax.contrib import _muon as optax_muon  # orthogonalize_via_newton_schulz is not exported

import optjax
from optjax import contrib as optjax_contrib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimizer_step as step_bench  # the trees, the jitted donated step and the timing

LEARNING_RATE = 1e-3
NS_COEFFS = (3.4445, -4.775, 2.0315)
NS_STEPS = 5


@dataclass(frozen=True)
class Entry:
    """How to build one optimizer in both libraries: optax's module (``optax`` or
    ``optax.contrib``), the keyword arguments both get, and whether update takes ``value=``."""

    contrib: bool = False
    kwargs: dict = field(default_factory=lambda: {"learning_rate": LEARNING_RATE})
    takes_value: bool = False


def _lr(**kwargs) -> dict:
    return {"learning_rate": LEARNING_RATE, **kwargs}


CATALOGUE = {
    "adabelief": Entry(),
    "adan": Entry(),
    "yogi": Entry(),
    "novograd": Entry(),
    "sm3": Entry(),
    "lamb": Entry(),
    "lars": Entry(),
    "fromage": Entry(),
    "sign_sgd": Entry(),
    "signum": Entry(),
    "rprop": Entry(),
    "noisy_sgd": Entry(kwargs=_lr(key=0)),
    "optimistic_gradient_descent": Entry(),
    "optimistic_adam": Entry(),
    "optimistic_adam_v2": Entry(),
    "polyak_sgd": Entry(kwargs={}, takes_value=True),
    "lbfgs": Entry(kwargs=_lr(linesearch=None)),
    "muon": Entry(contrib=True),
    "schedule_free_adamw": Entry(contrib=True),
    "schedule_free_sgd": Entry(contrib=True),
    "prodigy": Entry(contrib=True),
    "dadapt_adamw": Entry(contrib=True),
    "adopt": Entry(contrib=True),
    "ademamix": Entry(contrib=True),
    "simplified_ademamix": Entry(contrib=True),
    "dog": Entry(contrib=True),
    "dowg": Entry(contrib=True),
    "cocob": Entry(contrib=True),
    "madgrad": Entry(contrib=True),
    "acprop": Entry(contrib=True),
    "momo": Entry(contrib=True, takes_value=True),
    "momo_adam": Entry(contrib=True, takes_value=True),
    "sophia": Entry(contrib=True),
    "galore": Entry(contrib=True),
}
OPTIMIZERS = list(CATALOGUE)
TREES = step_bench.TREES


def squared_gradient(library):
    """Sophia's Hessian-diagonal estimate for this benchmark, ``g * g``, as a transform of the
    given library: it needs no objective, so Sophia steps with gradients alone in both."""

    def init(params):
        del params
        return library.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(lambda g: g * g, updates), state

    return library.GradientTransformation(init, update)


def build(name: str, library: str):
    """``optjax.NAME(...)`` or optax's ``NAME(...)``, with the catalogue's arguments."""
    entry = CATALOGUE[name]
    kwargs = dict(entry.kwargs)
    if name == "sophia":
        kwargs["hessian_diagonal_fn"] = squared_gradient(optjax if library == "optjax" else optax)
    if library == "optjax":
        return getattr(optjax, name)(**kwargs)
    return getattr(optax_contrib if entry.contrib else optax, name)(**kwargs)


def missing(name: str) -> str | None:
    """Why this optimizer cannot be compared (absent from one library), or None."""
    if not hasattr(optjax, name):
        return "not in optjax"
    entry = CATALOGUE[name]
    module = optax_contrib if entry.contrib else optax
    if not hasattr(module, name):
        return f"not in {module.__name__}"
    return None


def step_function(tx, takes_value: bool):
    """``(params, state, inputs) -> (params, state)``: update and apply, with the gradients (and
    the loss value, for the optimizers that take one) read from ``inputs``."""

    def step(params, state, inputs):
        extra = {"value": inputs["value"]} if takes_value else {}
        updates, state = tx.update(inputs["grads"], state, params, **extra)
        return optax.apply_updates(params, updates), state

    return step


def as_tree(arrays) -> dict:
    return {f"p{i:04d}": jnp.asarray(x) for i, x in enumerate(arrays)}


def own_buffers(tree):
    """A copy of every leaf: an initial state may hold one array twice, or the params themselves
    (to remember the starting point), and a donated buffer must appear once."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def step_case(name: str, library: str, params_np, inputs, n_params):
    """One library's jitted, donated step on fresh copies of the parameters."""
    tx = build(name, library)
    params = as_tree(params_np)
    step = step_function(tx, CATALOGUE[name].takes_value)
    return step_bench.JaxCase(step, params, own_buffers(tx.init(params)), inputs, n_params)


def trials_within(cases: dict, trials: int, min_trial_s: float, budget_s: float) -> int:
    """The trials a group runs: ``trials``, or fewer (at least 3) when one step of its cases is
    so slow that the group would take more than ``budget_s``. One step of each case is timed."""
    per_trial = sum(max(min_trial_s, case.run(1)) for case in cases.values())
    return int(max(3, min(trials, budget_s // per_trial)))


def time_group(name, tree, params_np, grads_np, args) -> dict:
    """optjax's and optax's step of one optimizer on one tree, timed side by side: a table row,
    or the reason the step could not be built."""
    n_params = sum(p.size for p in params_np)
    inputs = {"grads": as_tree(grads_np), "value": jnp.asarray(0.5, jnp.float32)}
    row = {"tree": tree, "optimizer": name, "leaves": len(params_np), "params": int(n_params)}
    cases = {}
    for library in ("optjax", "optax"):
        try:
            cases[library] = step_case(name, library, params_np, inputs, n_params)
        except (TypeError, ValueError, NotImplementedError, RuntimeError) as e:
            reason = f"{library}: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"skipped {name} on {tree}: {reason}", file=sys.stderr)
            return {**row, "unavailable": reason}
        if args.verbose:
            first = cases[library].first_s
            print(f"  {tree} {name} {library}: first call {first:.2f} s", file=sys.stderr)
    trials = trials_within(cases, args.trials, args.min_trial_s, args.group_seconds)
    timed = step_bench.time_cases(cases, trials, args.min_trial_s)
    for case in cases.values():
        case.free()
    optjax_s, optax_s = timed["optjax"]["median_s"], timed["optax"]["median_s"]
    return {
        **row,
        "optjax_ms_per_step": 1e3 * optjax_s,
        "optax_ms_per_step": 1e3 * optax_s,
        "optax_over_optjax": optax_s / optjax_s,
        "trials": trials,
        "xla_bytes_per_param": {lib: cases[lib].xla_bytes / n_params for lib in cases},
        "first_call_s": {lib: cases[lib].first_s for lib in cases},
        "samples_s": {lib: timed[lib]["samples_s"] for lib in timed},
        "reps": {lib: timed[lib]["reps"] for lib in timed},
    }


class FunctionCase:
    """A jitted function of one array, run ``reps`` times in a row (for ``time_cases``)."""

    def __init__(self, fn, x):
        self.fn, self.x = jax.jit(fn), x
        self.fn(x).block_until_ready()

    def run(self, reps) -> float:
        start = time.perf_counter()
        for _ in range(reps):
            out = self.fn(self.x)
        out.block_until_ready()
        return time.perf_counter() - start


def newton_schulz_cases(size: int) -> dict:
    """Each library's orthogonalize_via_newton_schulz (five steps, default coefficients, Frobenius
    normalisation) on one size x size float32 matrix of normal numbers."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    optax_coeffs = jnp.asarray(NS_COEFFS, jnp.float32)
    return {
        "optjax": FunctionCase(
            lambda m: optjax_contrib.orthogonalize_via_newton_schulz(m, NS_COEFFS, NS_STEPS), x
        ),
        "optax": FunctionCase(
            lambda m: optax_muon.orthogonalize_via_newton_schulz(m, optax_coeffs, NS_STEPS), x
        ),
    }


def time_newton_schulz(size: int, args) -> dict:
    """The Newton-Schulz row: both libraries' medians, interleaved like the steps."""
    cases = newton_schulz_cases(size)
    trials = trials_within(cases, args.trials, args.min_trial_s, args.group_seconds)
    timed = step_bench.time_cases(cases, trials, args.min_trial_s)
    optjax_s, optax_s = timed["optjax"]["median_s"], timed["optax"]["median_s"]
    return {
        "matrix": f"{size}x{size}",
        "ns_steps": NS_STEPS,
        "optjax_ms": 1e3 * optjax_s,
        "optax_ms": 1e3 * optax_s,
        "optax_over_optjax": optax_s / optjax_s,
        "trials": trials,
        "samples_s": {lib: timed[lib]["samples_s"] for lib in timed},
    }


def run_benchmark(args) -> dict:
    load_start = os.getloadavg()
    rows, skipped = [], []
    for name in args.optimizers:
        why = missing(name)
        if why:
            print(f"skipped {name}: {why}", file=sys.stderr)
            skipped.append({"optimizer": name, "why": why})
    names = [n for n in args.optimizers if not missing(n)]
    for tree in args.trees:
        params_np, grads_np = step_bench.make_arrays(step_bench.tree_shapes(tree, args.quick), 0)
        for name in names:
            rows.append(time_group(name, tree, params_np, grads_np, args))
    newton_schulz = [time_newton_schulz(args.ns_size, args)] if args.ns_size else []
    info = step_bench.meta(args, None, None, load_start, os.getloadavg())
    info["command"] = "python benchmarks/catalogue_step.py " + " ".join(args.argv)
    info.pop("torch")
    info["versions"].pop("torch")
    return {"meta": info, "rows": rows, "skipped": skipped, "newton_schulz": newton_schulz}


def slower(rows, threshold: float = 0.95) -> list[str]:
    """The (tree, optimizer) groups whose optax/optjax ratio is below ``threshold``: optjax's
    step slower than optax's by more than the 5% this benchmark reads as noise by default."""
    return [
        f"{r['optimizer']} on {r['tree']} ({r['optax_over_optjax']:.2f})"
        for r in rows
        if "optax_over_optjax" in r and r["optax_over_optjax"] < threshold
    ]


def render(result: dict) -> str:
    m = result["meta"]
    lines = [
        *step_bench.header_lines(m),
        "",
        (
            "| tree | optimizer | optjax ms/step | optax ms/step | optax/optjax "
            "| XLA B/param optjax | XLA B/param optax | trials |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        label = f"{r['tree']} ({r['leaves']} leaves)"
        if "unavailable" in r:
            lines.append(f"| {label} | {r['optimizer']} | n/a | n/a | | | | |")
            continue
        lines.append(
            f"| {label} | {r['optimizer']} | {r['optjax_ms_per_step']:.3f} | "
            f"{r['optax_ms_per_step']:.3f} | {r['optax_over_optjax']:.2f} | "
            f"{_xla(r['xla_bytes_per_param']['optjax'])} | "
            f"{_xla(r['xla_bytes_per_param']['optax'])} | {r['trials']} |"
        )
    if result["newton_schulz"]:
        lines += [
            "",
            "| Newton-Schulz (alone) | steps | optjax ms | optax ms | optax/optjax | trials |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['matrix']} | {r['ns_steps']} | {r['optjax_ms']:.3f} | {r['optax_ms']:.3f} | "
            f"{r['optax_over_optjax']:.2f} | {r['trials']} |"
            for r in result["newton_schulz"]
        ]
    lines.append("")
    lines.append(
        "slower than optax (optax/optjax < 0.95): " + (", ".join(slower(result["rows"])) or "none")
    )
    lines += [f"skipped: {s['optimizer']}: {s['why']}" for s in result["skipped"]]
    lines += [
        f"skipped: {r['optimizer']} on {r['tree']}: {r['unavailable']}"
        for r in result["rows"]
        if "unavailable" in r
    ]
    return "\n".join(lines)


def _xla(bytes_per_param: float) -> str:
    return f"{bytes_per_param:.1f}" if np.isfinite(bytes_per_param) else "-"


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small trees, few trials")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--trees", default=",".join(TREES))
    parser.add_argument(
        "--trials", type=int, default=0, help="trials per group (default 11, quick 3)"
    )
    parser.add_argument(
        "--group-seconds",
        type=float,
        default=0.0,
        help="time one group's trials may take before it runs fewer (default 30, quick 2)",
    )
    parser.add_argument(
        "--ns-size",
        type=int,
        default=-1,
        help="Newton-Schulz matrix side (default 1024, quick 256; 0: none)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    step_bench.split_choices(parser, args, optimizers=OPTIMIZERS, trees=TREES)
    args.trials = args.trials or (3 if args.quick else 11)
    args.group_seconds = args.group_seconds or (2.0 if args.quick else 30.0)
    args.min_trial_s = 0.003 if args.quick else 0.1
    if args.ns_size < 0:
        args.ns_size = 256 if args.quick else 1024
    return args


# --quick checks the table's format: it compiles with XLA's fast options (as the test suite
# does), which give a different machine code, so its times are not those of a full run.
FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    "--xla_cpu_use_fusion_emitters=false"
)


def add_xla_flags(added: str) -> None:
    """Add ``added`` to XLA_FLAGS (unless there already); it takes effect if JAX's backend has
    not started yet."""
    flags = os.environ.get("XLA_FLAGS", "")
    if added not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {added}".strip()


def compile_fast() -> None:
    add_xla_flags(FAST_COMPILE)


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.quick:
        compile_fast()
    result = run_benchmark(args)
    step_bench.report(render(result), result, args.json)
    return result


if __name__ == "__main__":
    main()
