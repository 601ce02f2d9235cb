"""The speed of one optimizer step, side by side: optjax (tree and flat paths), optax, a
hand-written fused jitted function, and torch.optim, against the machine's streaming bandwidth.

    python benchmarks/optimizer_step.py                      # the full table (minutes)
    python benchmarks/optimizer_step.py --quick              # small trees, few trials (< 1 min)
    python benchmarks/optimizer_step.py --torch-python /tmp/venv-torch/bin/python --json out.json

A step is update plus apply, jitted, with params and optimizer state donated (in place); the
gradients are an input. Every figure is the median over trials, and the trials interleave the
implementations (one batch of steps each, in rotating order), so every ratio compares runs taken
under the same load. torch.optim runs in a second interpreter (``--torch-python``, or this one if
it imports torch), driven over a pipe between the same trials; without torch its rows are absent.

Memory traffic counts the bytes a step must move per parameter (float32): each array read or
written once per pass the algorithm's data dependencies force. SGD with momentum and Lion read
p, g, m and write p, m (20 B); Adam, AdamW and NAdam read p, g, m, v and write p, m, v (28 B).
Adafactor must finish two reductions before it can apply the update (the factored row and column
statistics, then the RMS of the update used for clipping), so it passes over the gradient three
times: 24 B for a factored leaf (read g, p; read g; read g, p and write p) and 40 B for a leaf
with a full second moment (v is read in every pass and written in the first). GB/s is that
traffic over the step time, and "of BW" its fraction of the streaming bandwidth: XLA's in-place
triad (12 B per element) timed among the trials of the same group, under the same load. The
header also gives the bandwidth measured at the start by XLA, NumPy and torch. "XLA B/param" is
the traffic XLA's own cost analysis counts for a JAX step's compiled program: two steps with the
same count (and flops) compiled to the same loops, so their time ratio measures only noise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optjax
from optjax import flat as optjax_flat
from optjax.transforms.factored import factored_dims

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fused_steps as fused_steps  # the hand-written steps

OPTIMIZERS = ["sgd", "adam", "adamw", "nadam", "lion", "adafactor"]
TREES = ["single", "mixed", "small"]
TORCH_VARIANTS = {
    "sgd": ["for-loop", "foreach", "fused"],
    "adam": ["for-loop", "foreach", "fused"],
    "adamw": ["for-loop", "foreach", "fused"],
    "nadam": ["for-loop", "foreach"],
    "lion": [],
    "adafactor": ["for-loop", "foreach"],
}
BYTES_PER_PARAM = {"sgd": 20, "adam": 28, "adamw": 28, "nadam": 28, "lion": 20}


def libraries():
    """The same optimizer, with the same hyperparameters, from each library (torch: _torch_step)."""
    return {
        "sgd": (lambda: optjax.sgd(1e-3, momentum=0.9), lambda: optax.sgd(1e-3, momentum=0.9)),
        "adam": (lambda: optjax.adam(1e-3), lambda: optax.adam(1e-3)),
        "adamw": (
            lambda: optjax.adamw(1e-3, weight_decay=1e-4),
            lambda: optax.adamw(1e-3, weight_decay=1e-4),
        ),
        "nadam": (lambda: optjax.nadam(1e-3), lambda: optax.nadam(1e-3)),
        "lion": (lambda: optjax.lion(1e-3), lambda: optax.lion(1e-3)),
        "adafactor": (lambda: optjax.adafactor(1e-3), lambda: optax.adafactor(1e-3)),
    }


def tree_shapes(name: str, quick: bool) -> list[tuple[int, ...]]:
    """single: one matrix; mixed: a 16-layer transformer (about 200 leaves of mixed shapes);
    small: many leaves of 64 floats. --quick shrinks all three."""
    if name == "single":
        return [(256, 512)] if quick else [(2500, 4000)]
    if name == "small":
        return [(64,)] * (24 if quick else 2000)
    d, layers, vocab, context = (32, 2, 1000, 256) if quick else (224, 16, 1000, 256)
    shapes = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,)]
        shapes += [(d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return [*shapes, (d,), (d,)]


def make_arrays(shapes, seed):
    """Parameters and gradients (float32); _torch_step.make_arrays draws the same numbers."""
    rng = np.random.default_rng(seed)
    params = [(0.02 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    grads = [(1e-3 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    return params, grads


def traffic_bytes(optimizer: str, shapes) -> int:
    """Bytes one step must move (see the module docstring)."""
    if optimizer != "adafactor":
        return BYTES_PER_PARAM[optimizer] * sum(int(np.prod(s)) for s in shapes)
    total = 0
    for s in shapes:
        per = 24 if factored_dims(s, True, 128) is not None else 40
        total += per * int(np.prod(s))
    return total


def _median(xs):
    return float(np.median(xs))


class JaxCase:
    """A jitted step ``(params, state, grads) -> (params, state)`` with params and state donated.

    ``xla_bytes`` is the traffic XLA's cost analysis counts for the compiled step: two steps that
    compile to the same program count the same bytes, whatever their timings say. ``temp_bytes``
    is the scratch memory the compiled step asks for on each call (NaN where the backend does
    not say)."""

    def __init__(self, step, params, state, grads, n_params):
        self.args = [params, state]
        self.grads = grads
        self.state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if x.size > 1) / n_params
        start = time.perf_counter()
        self.step = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
        self._run(1)
        self.first_s = time.perf_counter() - start
        cost = self.step.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # a list in older JAX versions
        self.xla_bytes = float(cost.get("bytes accessed", float("nan"))) if cost else float("nan")
        memory = self.step.memory_analysis()
        temp = getattr(memory, "temp_size_in_bytes", None)
        self.temp_bytes = float("nan") if temp is None else float(temp)

    def _run(self, reps):
        params, state = self.args
        for _ in range(reps):
            params, state = self.step(params, state, self.grads)
        jax.block_until_ready(params)
        self.args = [params, state]

    def run(self, reps) -> float:
        start = time.perf_counter()
        self._run(reps)
        return time.perf_counter() - start

    def free(self):
        self.args = self.grads = self.step = None


def library_case(tx, params, grads, n_params):
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    return JaxCase(step, params, tx.init(params), grads, n_params)


def jax_cases(optimizer, tree, params_np, grads_np):
    """Every JAX implementation of the step on this tree: name -> factory (built lazily)."""
    n_params = sum(p.size for p in params_np)
    make_optjax, make_optax = libraries()[optimizer]

    def as_tree(xs):
        return {f"p{i:04d}": jnp.asarray(x) for i, x in enumerate(xs)}

    grads = as_tree(grads_np)

    def flat_case():
        params = as_tree(params_np)
        layout = optjax_flat.FlatLayout.of(params)
        pack = jax.jit(layout.flatten)
        return library_case(make_optjax(), pack(params), pack(grads), n_params)

    def fused_case(concatenate):
        leaves = [jnp.asarray(p) for p in params_np]
        g = [jnp.asarray(x) for x in grads_np]
        if concatenate:
            leaves, g = (
                [jnp.concatenate([x.ravel() for x in leaves])],
                [jnp.concatenate([x.ravel() for x in g])],
            )
        init, step = fused_steps.FUSED[optimizer]
        return JaxCase(step, leaves, init(leaves), g, n_params)

    cases = {
        "optjax": lambda: library_case(make_optjax(), as_tree(params_np), grads, n_params),
        "optjax flat": flat_case,
        "optax": lambda: library_case(make_optax(), as_tree(params_np), grads, n_params),
        "fused": lambda: fused_case(False),
    }
    if tree != "single" and optimizer != "adafactor":  # adafactor's fused step needs the shapes
        cases["fused flat"] = lambda: fused_case(True)
    return cases


class StreamCase:
    """XLA's in-place triad ``a <- 0.5 a + b`` on large arrays, timed among the steps of every
    group like one more implementation: the streaming bandwidth under the same load."""

    def __init__(self, n: int):
        self.n = n
        self.b = jnp.full(n, 2.0, jnp.float32)
        self.triad = jax.jit(lambda a, b: 0.5 * a + b, donate_argnums=0)
        self.a = self.triad(jnp.zeros(n, jnp.float32), self.b).block_until_ready()

    def run(self, reps) -> float:
        start = time.perf_counter()
        for _ in range(reps):
            self.a = self.triad(self.a, self.b)
        self.a.block_until_ready()
        return time.perf_counter() - start

    def gb_per_s(self, seconds: float) -> float:
        return 12 * self.n / seconds / 1e9


class TorchWorker:
    """The torch.optim side, in its own interpreter (see _torch_step.py)."""

    def __init__(self, python: str):
        script = Path(__file__).resolve().parent / "_torch_step.py"
        self.proc = subprocess.Popen(
            [python, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.count = 0

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class TorchCase:
    def __init__(self, worker, optimizer, variant, shapes, seed, n_params):
        worker.count += 1
        self.worker, self.id = worker, worker.count
        reply = worker.ask(
            cmd="setup", id=self.id, shapes=shapes, seed=seed, optimizer=optimizer, variant=variant
        )
        if not reply["ok"]:
            raise RuntimeError(reply["why"])
        self.first_s = reply["first_s"]
        self.state_bytes = reply["state_bytes"] / n_params
        self.xla_bytes = float("nan")

    def run(self, reps) -> float:
        seconds = self.worker.ask(cmd="run", id=self.id, reps=reps)["seconds"]
        time.sleep(0.005)  # let torch's OpenMP threads stop spinning before the next case runs
        return seconds

    def free(self):
        self.worker.ask(cmd="free", id=self.id)


def find_torch(option: str | None) -> str | None:
    """The interpreter that runs torch: --torch-python, else this one if it has torch."""
    if option == "none":
        return None
    if option:
        return option
    try:
        import torch  # noqa: F401

        return sys.executable
    except ImportError:
        return None


def measure_bandwidth(n: int, trials: int, worker) -> dict:
    """Streaming bandwidth, STREAM's counting (12 bytes per element: read two arrays, write one):
    XLA's in-place ``a <- 0.5 a + b`` (a donated, so no fresh output to page in), NumPy's
    ``add(b, c, out=a)`` and, with torch, ``torch.add(b, c, alpha=0.5, out=a)``."""
    b = jnp.full(n, 2.0, jnp.float32)
    triad = jax.jit(lambda a, b: 0.5 * a + b, donate_argnums=0)
    a = triad(jnp.zeros(n, jnp.float32), b)
    xla = []
    for _ in range(trials):
        start = time.perf_counter()
        a = triad(a, b).block_until_ready()
        xla.append(time.perf_counter() - start)
    an, bn, cn = np.zeros(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    np.add(bn, cn, out=an)
    numpy_s = []
    for _ in range(trials):
        start = time.perf_counter()
        np.add(bn, cn, out=an)
        numpy_s.append(time.perf_counter() - start)
    found = {"xla triad": 12 * n / _median(xla) / 1e9, "numpy add": 12 * n / _median(numpy_s) / 1e9}
    if worker is not None:
        reply = worker.ask(cmd="bandwidth", n=n, trials=trials + 1)
        found["torch add"] = 12 * n / _median(reply["seconds"][1:]) / 1e9
    return {"GB/s": max(found.values()), "by kernel": found, "elements": n}


def time_cases(cases: dict, trials: int, min_trial_s: float) -> dict:
    """Median seconds per step of each case, trials interleaved in rotating order."""
    reps = {}
    for name, case in cases.items():
        one = case.run(1)
        reps[name] = int(max(1, min(200, min_trial_s / max(one, 1e-6))))
    samples = {name: [] for name in cases}
    names = list(cases)
    for t in range(trials):
        for name in names[t % len(names) :] + names[: t % len(names)]:
            samples[name].append(cases[name].run(reps[name]) / reps[name])
    return {
        name: {"median_s": _median(s), "samples_s": s, "reps": reps[name]}
        for name, s in samples.items()
    }


def run_benchmark(args) -> dict:
    torch_python = find_torch(args.torch_python)
    worker = TorchWorker(torch_python) if torch_python else None
    torch_version = worker.ask(cmd="versions", threads=args.torch_threads) if worker else None
    trials = args.trials or (3 if args.quick else 15)
    min_trial_s = 0.003 if args.quick else 0.1
    load_start = os.getloadavg()
    stream_n = 1_000_000 if args.quick else 20_000_000
    bandwidth = measure_bandwidth(stream_n, trials, worker)
    stream = StreamCase(stream_n)
    rows = []
    for tree in args.trees:
        shapes = tree_shapes(tree, args.quick)
        params_np, grads_np = make_arrays(shapes, seed=0)
        n_params = sum(p.size for p in params_np)
        for optimizer in args.optimizers:
            cases, failed = {}, {}
            for name, factory in jax_cases(optimizer, tree, params_np, grads_np).items():
                cases[name] = factory()
                if args.verbose:
                    print(
                        f"  {tree} {optimizer} {name}: first call {cases[name].first_s:.2f} s",
                        file=sys.stderr,
                    )
            if worker:
                for variant in TORCH_VARIANTS[optimizer]:
                    try:
                        cases[f"torch {variant}"] = TorchCase(
                            worker, optimizer, variant, shapes, 0, n_params
                        )
                    except RuntimeError as e:
                        failed[f"torch {variant}"] = str(e)
            timed = time_cases({**cases, "stream": stream}, trials, min_trial_s)
            stream_gbs = stream.gb_per_s(timed["stream"]["median_s"])
            traffic = traffic_bytes(optimizer, shapes)
            optax_s = timed["optax"]["median_s"]
            for name, case in cases.items():
                s = timed[name]["median_s"]
                rows.append(
                    {
                        "tree": tree,
                        "optimizer": optimizer,
                        "impl": name,
                        "leaves": len(shapes),
                        "params": n_params,
                        "ms_per_step": 1e3 * s,
                        "optax_over_this": optax_s / s,
                        "GB_per_s": traffic / s / 1e9,
                        "fraction_of_bandwidth": traffic / s / 1e9 / stream_gbs,
                        "stream_GB_per_s": stream_gbs,
                        "first_call_s": case.first_s,
                        "state_bytes_per_param": case.state_bytes,
                        "xla_bytes_per_param": case.xla_bytes / n_params,
                        "traffic_bytes": traffic,
                        "samples_s": timed[name]["samples_s"],
                        "reps": timed[name]["reps"],
                    }
                )
                case.free()
            for name, why in failed.items():
                rows.append(
                    {"tree": tree, "optimizer": optimizer, "impl": name, "unavailable": why}
                )
    if worker:
        worker.close()
    return {
        "meta": meta(args, torch_python, torch_version, load_start, os.getloadavg()),
        "bandwidth": bandwidth,
        "rows": rows,
        "targets": targets(rows),
    }


def targets(rows) -> list[dict]:
    """The goals of the flat path and of the tree path, met or not, from this run's ratios."""
    by = {(r["tree"], r["optimizer"], r["impl"]): r for r in rows if "ms_per_step" in r}
    out = []

    def add(goal, value, ok):
        out.append({"goal": goal, "measured": round(value, 3), "met": bool(ok)})

    for (tree, opt, impl), r in sorted(by.items()):
        if impl == "optjax":
            add(
                f"tree path {opt} on {tree}: optjax/optax time <= 1.0",
                1 / r["optax_over_this"],
                r["optax_over_this"] >= 1.0,
            )
            if opt == "lion":
                add(
                    f"tree path lion on {tree}: optax/optjax >= 3",
                    r["optax_over_this"],
                    r["optax_over_this"] >= 3,
                )
            if opt == "adafactor":
                add(
                    f"tree path adafactor on {tree}: optax/optjax >= 2",
                    r["optax_over_this"],
                    r["optax_over_this"] >= 2,
                )
        if impl == "optjax flat":
            optax_row = by[(tree, opt, "optax")]
            if tree == "small":
                add(
                    f"flat {opt} on small: optax/flat step >= 50",
                    r["optax_over_this"],
                    r["optax_over_this"] >= 50,
                )
                ratio = optax_row["first_call_s"] / r["first_call_s"]
                add(f"flat {opt} on small: optax/flat first call >= 20", ratio, ratio >= 20)
            if tree == "mixed":
                add(
                    f"flat {opt} on mixed: optax/flat step >= 1.15",
                    r["optax_over_this"],
                    r["optax_over_this"] >= 1.15,
                )
            if tree == "single":
                ratio = r["ms_per_step"] / by[(tree, opt, "fused")]["ms_per_step"]
                add(f"flat {opt} on single: flat/fused time <= 1.05", ratio, ratio <= 1.05)
        if impl == "torch fused" and opt == "adam":
            ratio = by[(tree, opt, "optjax flat")]["ms_per_step"] / r["ms_per_step"]
            add(f"adam on {tree}: optjax flat/torch fused time (aim <= 1)", ratio, ratio <= 1.0)
    return out


def meta(args, torch_python, torch_version, load_start, load_end) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "command": "python benchmarks/optimizer_step.py " + " ".join(args.argv),
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "versions": {
            "optjax": optjax.__version__,
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "torch": torch_version["torch"] if torch_version else None,
        },
        "torch": f"{torch_python} ({torch_version['threads']} threads)"
        if torch_version
        else "not run (no torch)",
    }


def header_lines(meta: dict) -> list[str]:
    """The lines every step benchmark's table starts with: the command, the machine and its load
    before and after, the versions and the date (from `meta`'s dict)."""
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    return [
        f"command: {meta['command']}",
        (
            f"machine: {meta['machine']}; "
            f"load average {meta['load_average_start']} -> {meta['load_average_end']}"
        ),
        f"versions: {versions}",
        f"date: {meta['date']}",
    ]


def render(result: dict) -> str:
    m, bw = result["meta"], result["bandwidth"]
    kernels = ", ".join(f"{k} {v:.1f}" for k, v in bw["by kernel"].items())
    streams = [r["stream_GB_per_s"] for r in result["rows"] if "stream_GB_per_s" in r]
    lines = [
        *header_lines(m),
        f"torch.optim: {m['torch']}",
        (
            f"streaming bandwidth at the start: {bw['GB/s']:.1f} GB/s (best of: {kernels}); "
            f"XLA triad among the trials: median {_median(streams):.1f} GB/s over the groups"
        ),
        "",
        (
            "| tree | optimizer | implementation | ms/step | optax/this | GB/s | of BW "
            "| first call s | state B/param | XLA B/param |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        label = f"{r['tree']} ({r['leaves']} leaves)" if "leaves" in r else r["tree"]
        if "unavailable" in r:
            lines.append(f"| {label} | {r['optimizer']} | {r['impl']} | n/a | | | | | | |")
            continue
        lines.append(
            f"| {label} | {r['optimizer']} | {r['impl']} | {r['ms_per_step']:.3f} | "
            f"{r['optax_over_this']:.2f} | {r['GB_per_s']:.1f} | "
            f"{100 * r['fraction_of_bandwidth']:.0f}% | "
            f"{r['first_call_s']:.2f} | {r['state_bytes_per_param']:.1f} | "
            f"{_xla(r.get('xla_bytes_per_param'))} |"
        )
    lines += ["", "| goal | measured | met |", "|---|---:|---|"]
    lines += [
        f"| {t['goal']} | {t['measured']:.3f} | {'yes' if t['met'] else 'no'} |"
        for t in result["targets"]
    ]
    return "\n".join(lines)


def _xla(bytes_per_param) -> str:
    if bytes_per_param is None or not np.isfinite(bytes_per_param):
        return "-"
    return f"{bytes_per_param:.1f}"


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small trees, few trials")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--trees", default=",".join(TREES))
    parser.add_argument(
        "--trials", type=int, default=0, help="trials per case (default 15, quick 5)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    parser.add_argument("--torch-python", help="interpreter with torch; 'none' to skip torch")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="torch's threads (0: its default)"
    )
    args = parser.parse_args(argv)
    args.argv = list(argv)
    split_choices(parser, args, optimizers=OPTIMIZERS, trees=TREES)
    return args


def split_choices(parser: argparse.ArgumentParser, args, **allowed: list[str]) -> None:
    """Each comma-separated option named in ``allowed`` made a list on ``args``; a value not
    among the option's choices is refused (parser.error), naming the option."""
    for name, choices in allowed.items():
        chosen = getattr(args, name).split(",")
        bad = [x for x in chosen if x not in choices]
        if bad:
            parser.error(f"--{name} must be among {choices}, got {bad}")
        setattr(args, name, chosen)


def report(text: str, result: dict, json_path: str | None) -> None:
    """Print a benchmark's table; with ``json_path``, also write its results there as JSON."""
    print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    result = run_benchmark(args)
    report(render(result), result, args.json)
    return result


if __name__ == "__main__":
    main()
