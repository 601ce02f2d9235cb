"""Optimizer state and collectives on a mesh of 8 devices: optjax against optax, with FSDP and
ZeRO-1, on 8 simulated CPU devices.

    python benchmarks/sharding.py                 # the full table (about a minute on 2 cores)
    python benchmarks/sharding.py --quick         # a tiny model, few trials (format only)
    python benchmarks/sharding.py --json out.json

The model is an MLP-shaped tree: three (1024, 1024) kernels with (1024,) biases, a (1024, 10)
head with its (10,) bias and a scalar. The mesh is ``jax.make_mesh((8,), ("data",))`` with an
Auto axis. Two layouts:

- FSDP: each parameter split over "data" on its largest dimension that 8 divides
  (`optjax.sharding.zero1_spec`, the rule ZeRO-1 uses; leaves under ``MIN_SIZE`` elements, or
  with no such dimension, replicated); the gradients are laid out like the parameters, and the
  state is wherever the library's ``init`` puts it, found by tracing
  (`optjax.sharding.state_sharding`).
- ZeRO-1: parameters and gradients replicated (data parallelism after the gradient all-reduce),
  the transform wrapped by `optjax.sharding.zero1` (state split over "data" by the same rule).
  optax's transforms are wrapped by the same `zero1`, which takes any (init, update) pair, so
  the two libraries differ only in the transform inside.

For each optimizer, layout and library, a row of the table gives:

- state B/device: the optimizer state one device holds (the bytes of the shards on the fullest
  device), against an eighth of the whole state (ratio 1.00: perfectly split);
- one column per kind of collective: the bytes it produces per device in one step, read from
  the compiled HLO of the jitted step (update plus apply, params and state donated, in and out
  shardings pinned to the layout): elements times dtype size of every array in the results of
  that kind of instruction, with the number of arrays in parentheses;
- ms/step: the median over trials that alternate optjax's and optax's steps (the timing of
  optimizer_step.py), and time/optax, their ratio;
- params vs optax: the largest absolute difference between the two libraries' parameters
  after one step from the same start.
"""

from __future__ import annotations

import jax

jax.config.update("jax_num_cpu_devices", 8)  # before anything starts JAX's backend

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optjax  # noqa: E402
from optjax import sharding  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimizer_step import (  # noqa: E402  (the same trials and table header)
    header_lines,
    report,
    split_choices,
    time_cases,
)

DEVICES = 8
AXIS = "data"
MIN_SIZE = 1024  # zero1's default: smaller leaves stay replicated (in both layouts here)
OPTIMIZERS = ["adam", "adamw_clip", "adafactor", "lion"]
LAYOUTS = ["fsdp", "zero1"]
COLLECTIVES = ["all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute"]


def libraries():
    """The same transform, with the same hyperparameters, from each library."""
    return {
        "adam": (lambda: optjax.adam(1e-3), lambda: optax.adam(1e-3)),
        "adamw_clip": (
            lambda: optjax.chain(
                optjax.clip_by_global_norm(1.0), optjax.adamw(1e-3, weight_decay=1e-4)
            ),
            lambda: optax.chain(
                optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=1e-4)
            ),
        ),
        "adafactor": (lambda: optjax.adafactor(1e-3), lambda: optax.adafactor(1e-3)),
        "lion": (lambda: optjax.lion(1e-3), lambda: optax.lion(1e-3)),
    }


def param_shapes(quick: bool) -> dict:
    """The MLP-shaped tree: three square layers, a 10-way head and a scalar."""
    width = 128 if quick else 1024
    tree = {f"dense_{i}": {"kernel": (width, width), "bias": (width,)} for i in range(3)}
    tree["head"] = {"kernel": (width, 10), "bias": (10,)}
    tree["logit_scale"] = ()
    return tree


def is_shape(x) -> bool:
    """The leaves of a tree of shapes (for ``is_leaf``)."""
    return isinstance(x, tuple)


def split_spec(shape) -> P:
    """Where a leaf is split over the data axis (both layouts use ZeRO-1's rule)."""
    return sharding.zero1_spec(tuple(shape), P(), AXIS, DEVICES, MIN_SIZE)


# -- collectives in compiled HLO ----------------------------------------------------------------

_COLLECTIVE = re.compile(
    r"^\s*(?:ROOT\s+)?%?[^\s=]+\s*=\s*(?P<result>.+?)\s+"
    rf"(?P<op>{'|'.join(COLLECTIVES)})(?:-done)?\("
)
_ARRAY = re.compile(r"\b(pred|[a-z]+(\d+)[a-z0-9]*)\[([\d,]*)\]")


def array_bytes(dtype: str, bits: str, dims: str) -> int:
    """Bytes of one HLO array type from its parts: ``f32[128,64]`` is ("f32", "32", "128,64"),
    32768 bytes (pred is one byte)."""
    size = 8 if dtype == "pred" else int(bits)
    elements = int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
    return elements * size // 8


def collective_bytes(hlo: str) -> dict[str, dict]:
    """Per kind of collective: how many instructions, the bytes of every array in their results,
    and their sum. XLA:CPU combines collectives into one instruction with a tuple result, so every
    array of the result counts: ``(f32[128,64], f32[64]) all-reduce(...)`` is 32768 + 256 bytes.
    An asynchronous pair counts once, by its ``-done`` (whose result is the collective's)."""
    found = {op: {"ops": 0, "arrays": [], "bytes": 0} for op in COLLECTIVES}
    for line in hlo.splitlines():
        match = _COLLECTIVE.match(line)
        if match is None:
            continue
        entry = found[match["op"]]
        entry["ops"] += 1
        for dtype, bits, dims in _ARRAY.findall(match["result"]):
            entry["arrays"].append(array_bytes(dtype, bits, dims))
        entry["bytes"] = sum(entry["arrays"])
    return found


# -- one library's step on one layout ------------------------------------------------------------


def state_bytes(state) -> tuple[int, int]:
    """(bytes of the whole state, bytes of the shards on the fullest device)."""
    per_device: dict = {}
    for x in jax.tree.leaves(state):
        for shard in x.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    total = sum(x.nbytes for x in jax.tree.leaves(state))
    return total, max(per_device.values())


class Case:
    """A jitted step ``(params, state, grads) -> (params, state)``, params and state donated,
    compiled with the layout's shardings in and out; the first call's params are kept."""

    def __init__(self, tx, params_np, grads_np, param_shardings, grad_shardings):
        def put(tree, shardings):
            return jax.tree.map(jax.device_put, tree, shardings)

        params = put(params_np, param_shardings)
        grads = put(grads_np, grad_shardings)
        state_shardings = sharding.state_sharding(tx, params)
        state = sharding.init_sharded(tx, params, state_shardings)
        self.state_total, self.state_per_device = state_bytes(state)

        def step(p, s, g):
            updates, s = tx.update(g, s, p)
            return optjax.apply_updates(p, updates), s

        start = time.perf_counter()
        self.step = (
            jax.jit(
                step,
                in_shardings=(param_shardings, state_shardings, grad_shardings),
                out_shardings=(param_shardings, state_shardings),
                donate_argnums=(0, 1),
            )
            .lower(params, state, grads)
            .compile()
        )
        self.collectives = collective_bytes(self.step.as_text())
        self.grads = grads
        self.args = self.step(params, state, grads)
        self.after_one = jax.tree.map(np.asarray, self.args[0])
        self.first_s = time.perf_counter() - start

    def run(self, reps) -> float:
        start = time.perf_counter()
        params, state = self.args
        for _ in range(reps):
            params, state = self.step(params, state, self.grads)
        jax.block_until_ready(params)
        self.args = (params, state)
        return time.perf_counter() - start

    def free(self):
        self.args = self.grads = self.step = None


def make_arrays(shapes: dict, seed: int = 0):
    """Parameters and gradients (float32, NumPy) shaped like ``shapes``."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda s: (0.02 * rng.standard_normal(s)).astype(np.float32), shapes, is_leaf=is_shape
    )
    grads = jax.tree.map(
        lambda s: (1e-3 * rng.standard_normal(s)).astype(np.float32), shapes, is_leaf=is_shape
    )
    return params, grads


def run_benchmark(args) -> dict:
    mesh = jax.make_mesh((DEVICES,), (AXIS,), axis_types=(AxisType.Auto,))
    shapes = param_shapes(args.quick)
    params_np, grads_np = make_arrays(shapes)
    fsdp = jax.tree.map(lambda s: NamedSharding(mesh, split_spec(s)), shapes, is_leaf=is_shape)
    replicated = jax.tree.map(lambda s: NamedSharding(mesh, P()), shapes, is_leaf=is_shape)
    layouts = {"fsdp": (fsdp, fsdp), "zero1": (replicated, replicated)}
    trials = args.trials or (3 if args.quick else 21)
    min_trial_s = 0.003 if args.quick else 0.1
    load_start = os.getloadavg()
    rows = []
    with jax.set_mesh(mesh):
        for optimizer in args.optimizers:
            for layout in args.layouts:
                param_shardings, grad_shardings = layouts[layout]
                cases = {}
                for library, make in zip(("optjax", "optax"), libraries()[optimizer]):
                    tx = sharding.zero1(make(), AXIS) if layout == "zero1" else make()
                    cases[library] = Case(tx, params_np, grads_np, param_shardings, grad_shardings)
                    if args.verbose:
                        print(
                            f"  {optimizer} {layout} {library}: "
                            f"compile and first step {cases[library].first_s:.2f} s",
                            file=sys.stderr,
                        )
                timed = time_cases(cases, trials, min_trial_s)
                optax_s = timed["optax"]["median_s"]
                difference = max(
                    float(np.max(np.abs(a - b)))
                    for a, b in zip(
                        jax.tree.leaves(cases["optjax"].after_one),
                        jax.tree.leaves(cases["optax"].after_one),
                    )
                )
                for library, case in cases.items():
                    s = timed[library]["median_s"]
                    rows.append(
                        {
                            "optimizer": optimizer,
                            "layout": layout,
                            "library": library,
                            "state_bytes_total": case.state_total,
                            "state_bytes_per_device": case.state_per_device,
                            "collectives": case.collectives,
                            "ms_per_step": 1e3 * s,
                            "time_over_optax": s / optax_s,
                            "max_param_difference_after_one_step": difference,
                            "first_call_s": case.first_s,
                            "samples_s": timed[library]["samples_s"],
                            "reps": timed[library]["reps"],
                        }
                    )
                    case.free()
    leaves = jax.tree.leaves(shapes, is_leaf=is_shape)
    return {
        "meta": meta(args, load_start, os.getloadavg()),
        "model": {
            "shapes": [list(s) for s in leaves],
            "params": int(sum(np.prod(s, dtype=np.int64) for s in leaves)),
            "split": [list(s) for s in leaves if split_spec(s) != P()],
        },
        "rows": rows,
    }


def meta(args, load_start, load_end) -> dict:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "command": " ".join(["python benchmarks/sharding.py", *args.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": (
            f"{cpu}; {len(jax.devices())} simulated CPU devices on {os.cpu_count()} cores; "
            f"{platform.system()} {platform.release()}"
        ),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "versions": {
            "optjax": optjax.__version__,
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def _collective_cell(entry: dict) -> str:
    if not entry["arrays"]:
        return "0"
    return f"{entry['bytes']:,} ({len(entry['arrays'])})"


def render(result: dict) -> str:
    m, model = result["meta"], result["model"]
    lines = [
        *header_lines(m),
        (
            f"model: {model['params']:,} float32 parameters in {len(model['shapes'])} leaves, "
            f"{len(model['split'])} split over {DEVICES} devices "
            f"(leaves under {MIN_SIZE} elements replicated)"
        ),
        "",
        (
            "| optimizer | layout | library | state B/device | state B total/8 | ratio "
            + "".join(f"| {op} B (arrays) " for op in COLLECTIVES)
            + "| ms/step | time/optax | params vs optax |"
        ),
        "|---|---|---|" + "---:|" * (3 + len(COLLECTIVES) + 3),
    ]
    for r in result["rows"]:
        eighth = r["state_bytes_total"] / DEVICES
        diff = r["max_param_difference_after_one_step"]
        lines.append(
            f"| {r['optimizer']} | {r['layout']} | {r['library']} "
            f"| {r['state_bytes_per_device']:,} | {eighth:,.0f} "
            f"| {r['state_bytes_per_device'] / eighth:.2f} "
            + "".join(f"| {_collective_cell(r['collectives'][op])} " for op in COLLECTIVES)
            + f"| {r['ms_per_step']:.3f} | {r['time_over_optax']:.2f} "
            + (f"| {diff:.1e} |" if r["library"] == "optjax" else "| - |")
        )
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few trials")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument(
        "--trials", type=int, default=0, help="trials per case (default 21, quick 3)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    split_choices(parser, args, optimizers=OPTIMIZERS, layouts=LAYOUTS)
    return args


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    result = run_benchmark(args)
    report(render(result), result, args.json)
    return result


if __name__ == "__main__":
    main()
