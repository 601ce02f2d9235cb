"""``python -m optjax.train``: train an MLP or CNN on MNIST / Fashion-MNIST with any optjax
optimizer (or a torch.optim preset from optjax.torch_compat), several seeds at once.

Example:
    python -m optjax.train --dataset mnist --model mlp --optimizer adam --learning-rate 1e-3 \\
        --steps 3000 --batch-size 100 --seeds 0,1,2 --json results.json --plot curves.png
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

import optjax
from optjax import optimizers as optjax_optimizers
from optjax.train.data import DATASETS, ChecksumError, DataNotFoundError, IDXError, load_dataset
from optjax.train.loop import Progress, TrainResult, sweep, train
from optjax.train.models import CNN, INITS, MLP

PROG = "python -m optjax.train"
TORCH_PREFIX = "torch."


class UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def optimizer_names() -> list[str]:
    """optjax's optimizers usable by name: the public functions of optjax.optimizers whose first
    argument is the learning rate."""
    names = []
    for name, fn in vars(optjax_optimizers).items():
        if (
            name.startswith("_")
            or not inspect.isfunction(fn)
            or fn.__module__ != optjax_optimizers.__name__
        ):
            continue
        params = list(inspect.signature(fn).parameters)
        if params and params[0] == "learning_rate":
            names.append(name)
    return sorted(names)


def _torch_compat():
    try:
        return importlib.import_module("optjax.torch_compat")
    except ImportError:
        return None


def resolve_optimizer(name: str, learning_rate: float | None = None, **options) -> Callable:
    """A factory ``learning_rate -> transform`` for an optimizer named on the command line.

    ``name`` is an optjax optimizer ("adam", "sgd", ...) or a torch preset ("torch.RMSprop",
    looked up in optjax.torch_compat and called with torch's keyword arguments: ``lr=`` when a
    learning rate is given, else torch's defaults). ``options`` (momentum, nesterov,
    weight_decay) are passed on where the optimizer takes them; None means not given.
    Raises UsageError for an unknown name or an option the optimizer does not take.
    """
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    if options.get("nesterov") and not options.get("momentum"):
        raise UsageError("--nesterov needs --momentum > 0")
    if name.startswith(TORCH_PREFIX):
        module, attr, lr_name = _torch_compat(), name[len(TORCH_PREFIX) :], "lr"
        if module is None:
            raise UsageError(
                f"optimizer {name!r} needs optjax.torch_compat, which is not available"
            )
        fn = getattr(module, attr, None)
        if not (inspect.isfunction(fn) and attr[:1].isupper()):
            presets = sorted(
                n for n, f in vars(module).items() if n[:1].isupper() and inspect.isfunction(f)
            )
            raise UsageError(
                f"unknown torch preset {name!r}; choose from "
                + ", ".join(TORCH_PREFIX + p for p in presets)
            )
    else:
        lr_name, known = "learning_rate", optimizer_names()
        if name not in known:
            raise UsageError(
                f"unknown optimizer {name!r}; choose from {', '.join(known)}, "
                "or torch.<Name> (e.g. torch.Adam)"
            )
        fn = getattr(optjax_optimizers, name)
    signature = inspect.signature(fn).parameters
    for option in options:
        if option not in signature:
            raise UsageError(f"--{option.replace('_', '-')} does not apply to optimizer {name!r}")
    if learning_rate is None and lr_name in signature:
        default = signature[lr_name].default
        if default is inspect.Parameter.empty:
            raise UsageError(f"optimizer {name!r} needs --learning-rate")
        return lambda lr: fn(**options)
    return lambda lr: fn(**{lr_name: lr}, **options)


def _list_of(kind: type, noun: str) -> Callable[[str], list]:
    """An argparse type for a comma-separated list of ``kind`` (at least one)."""

    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {noun}s, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one {noun}, got {text!r}")
        return values

    return parse


_int_list = _list_of(int, "integer")
_float_list = _list_of(float, "number")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Train an MLP or CNN on MNIST or Fashion-MNIST with an optjax optimizer.",
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument(
        "--hidden",
        type=_int_list,
        default=None,
        help="hidden sizes: MLP layers (default 100), or the CNN's dense layer (default 256)",
    )
    p.add_argument(
        "--channels", type=_int_list, default=None, help="the CNN's two conv widths (default 32,64)"
    )
    p.add_argument(
        "--dropout",
        type=_float_list,
        default=None,
        help="the CNN's dropout rates after its conv layers and its dense layer (default 0.25,0.5)",
    )
    p.add_argument(
        "--init", choices=INITS, default="lecun", help="weight init: flax's (lecun) or torch.nn's"
    )
    p.add_argument(
        "--optimizer",
        default=None,
        help="an optjax optimizer (adam, sgd, ...) or a torch preset (torch.Adam, ...); "
        "default adam at lr 1e-3",
    )
    p.add_argument(
        "--learning-rate",
        "--lr",
        type=_float_list,
        default=None,
        help="learning rate; a comma-separated list trains one run per rate (vmapped)",
    )
    p.add_argument(
        "--momentum",
        type=float,
        default=None,
        help="for optimizers that take it (sgd, rmsprop, ...)",
    )
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (with --momentum)")
    p.add_argument(
        "--weight-decay", type=float, default=None, help="for optimizers that take it (adamw, ...)"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    p.add_argument(
        "--epochs", type=float, default=None, help="training length in epochs, instead of --steps"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--seeds", type=_int_list, default=[0], help="comma-separated seeds, one run each (vmapped)"
    )
    p.add_argument("--log-every", type=int, default=100, help="steps per progress update")
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="steps between test evaluations (default: 10 per run)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the dataset files (else $OPTJAX_DATA_DIR, then the cache)",
    )
    p.add_argument("--no-download", action="store_true", help="never download the dataset")
    p.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="save the train state to PATH every --log-every steps",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from --checkpoint as if never stopped"
    )
    p.add_argument(
        "--plot", metavar="PATH", default=None, help="write a PNG of the loss and accuracy curves"
    )
    p.add_argument(
        "--flat",
        action="store_true",
        help="hold params and optimizer state in flat buffers (optjax.flat): one fused update "
        "over a few buffers instead of one per leaf, same numbers",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class ProgressBar:
    """A one-line progress bar on a stream (stderr): redrawn in place on a terminal, otherwise a
    line at most every tenth of the run."""

    def __init__(self, stream=None, width: int = 24):
        self.stream, self.width = stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_tenth = -1

    def __call__(self, p: Progress) -> None:
        done = int(self.width * p.step / p.steps)
        bar = "#" * done + "-" * (self.width - done)
        test = f" test {100 * p.test_accuracy:.2f}%" if p.test_accuracy is not None else ""
        line = (
            f"[{bar}] {p.step}/{p.steps} loss {p.train_loss:.4f} acc {100 * p.train_accuracy:.2f}%"
            f"{test} {p.steps_per_second:.0f} steps/s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if p.step == p.steps else ""))
        elif 10 * p.step // p.steps > self.last_tenth:
            self.last_tenth = 10 * p.step // p.steps
            self.stream.write(line + "\n")
        self.stream.flush()


def summary_table(result: TrainResult, title: str) -> str:
    lines = [
        title,
        f"{'run':>3}  {'seed':>4}  {'learning rate':>13}  {'test acc':>8}  {'test loss':>9}",
    ]
    for i, r in enumerate(result.runs):
        lr = "-" if r.learning_rate is None else f"{r.learning_rate:.4g}"
        lines.append(
            f"{i:>3}  {r.seed:>4}  {lr:>13}  {100 * r.test_accuracy:7.2f}%  {r.test_loss:9.4f}"
        )
    lines.append(
        f"test accuracy: {100 * result.mean:.2f} ± {100 * result.std:.2f} % "
        f"(mean ± std over {len(result.runs)} run{'s' if len(result.runs) > 1 else ''})"
    )
    for lr in sorted({r.learning_rate for r in result.runs if r.learning_rate is not None}):
        accs = [r.test_accuracy for r in result.runs if r.learning_rate == lr]
        if len(accs) > 1 and len(accs) < len(result.runs):
            lines.append(
                f"  lr {lr:.4g}: {100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f} %"
            )
    lines.append(
        f"time: {result.wall_seconds:.1f} s (compile {result.compile_seconds:.1f} s, "
        f"{result.steps_per_second:.0f} steps/s of {len(result.runs)} run(s) at once)"
    )
    return "\n".join(lines)


def save_plot(result: TrainResult, path: str, title: str = "") -> None:
    """A PNG with the loss (left) and accuracy (right) curves of every run."""
    from matplotlib.figure import Figure  # lazy: matplotlib is needed only for --plot

    h = result.history
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i in range(len(result.runs)):
        style = {"color": f"C{i % 10}", "alpha": 0.8}
        label = {"label": f"run {i}"} if i < 10 else {}
        ax_loss.plot(h["step"], h["train_loss"][:, i], **style, **label)
        ax_acc.plot(h["step"], 100 * h["train_accuracy"][:, i], **style)
        ax_loss.plot(h["eval_step"], h["test_loss"][:, i], "o--", ms=3, **style)
        ax_acc.plot(h["eval_step"], 100 * h["test_accuracy"][:, i], "o--", ms=3, **style)
    ax_loss.set(
        xlabel="step",
        ylabel="cross-entropy loss",
        yscale="log",
        title="loss (solid: train, dashed: test)",
    )
    ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="accuracy (solid: train, dashed: test)")
    ax_loss.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


def _versions() -> dict:
    import flax

    return {
        "optjax": optjax.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _check_args(args: argparse.Namespace) -> None:
    """Reject bad numbers and paths before any data is read (UsageError, one line)."""
    if args.steps is not None and args.epochs is not None:
        raise UsageError("give --steps or --epochs, not both")
    for flag, value in (
        ("--steps", args.steps),
        ("--batch-size", args.batch_size),
        ("--log-every", args.log_every),
        ("--eval-every", args.eval_every),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be an integer >= 1, got {value}")
    if args.epochs is not None and not args.epochs > 0:
        raise UsageError(f"--epochs must be > 0, got {args.epochs}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        folder = os.path.dirname(os.path.abspath(path)) if path is not None else None
        if folder is not None and not os.path.isdir(folder):
            raise UsageError(f"{flag} {path}: directory {folder} does not exist")
    lrs = args.learning_rate
    if lrs is not None and any(not 0 <= lr < float("inf") for lr in lrs):
        raise UsageError(f"--learning-rate must be finite and >= 0, got {','.join(map(str, lrs))}")


def _model_from_args(args: argparse.Namespace) -> Callable:
    """The model constructor ``rngs -> nnx.Module`` the arguments describe."""
    if args.model == "mlp":
        for flag in ("channels", "dropout"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} applies to --model cnn only")
        hidden = tuple(args.hidden or (100,))
        return lambda rngs: MLP(hidden=hidden, init=args.init, rngs=rngs)
    if args.hidden is not None and len(args.hidden) != 1:
        raise UsageError(f"--hidden for the CNN is one size (its dense layer), got {args.hidden}")
    if args.channels is not None and len(args.channels) != 2:
        raise UsageError(f"--channels is two sizes (one per conv layer), got {args.channels}")
    hidden, channels = (args.hidden or [256])[0], tuple(args.channels or (32, 64))
    dropout = (0.25, 0.5) if args.dropout is None else tuple(args.dropout)
    if len(dropout) != 2 or not all(0 <= rate < 1 for rate in dropout):
        raise UsageError(f"--dropout is two rates in [0, 1), got {','.join(map(str, dropout))}")
    return lambda rngs: CNN(
        channels=channels, hidden=hidden, dropout=dropout, init=args.init, rngs=rngs
    )


def run(args: argparse.Namespace) -> TrainResult:
    """Train as the parsed command line says; raises UsageError for bad arguments."""
    _check_args(args)
    if args.optimizer is None:
        args.optimizer = "adam"
        args.learning_rate = args.learning_rate or [1e-3]
    lrs = args.learning_rate
    options = {
        "momentum": args.momentum,
        "nesterov": args.nesterov,
        "weight_decay": args.weight_decay,
    }
    make_tx = resolve_optimizer(args.optimizer, None if lrs is None else lrs[0], **options)
    try:  # build once with concrete numbers, so bad hyperparameters fail here with a clear message
        make_tx(None if lrs is None else lrs[0])
    except (ValueError, TypeError) as error:
        raise UsageError(f"optimizer {args.optimizer!r}: {error}") from None
    model = _model_from_args(args)

    if args.resume and args.checkpoint is None:
        raise UsageError("--resume needs --checkpoint PATH, the file to resume from")
    dataset = load_dataset(args.dataset, args.data_dir, download_missing=not args.no_download)
    n = len(dataset.train_labels)
    if args.batch_size > n:
        raise UsageError(
            f"--batch-size must be at most {n} (the training set size), got {args.batch_size}"
        )
    steps = args.steps if args.epochs is None else max(1, round(args.epochs * n / args.batch_size))
    steps = 3000 if steps is None else steps
    common = {
        "steps": steps,
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "log_every": min(args.log_every, steps),
        "eval_every": args.eval_every or max(1, steps // 10),
        "callback": None if args.quiet else ProgressBar(),
        "flat": args.flat,
    }
    if lrs is not None and len(lrs) > 1:
        if args.checkpoint is not None:
            raise UsageError("--checkpoint works with a single --learning-rate, not a sweep")
        return sweep(model, make_tx, dataset, learning_rates=lrs, **common)
    common.update(checkpoint=args.checkpoint, resume=args.resume)
    if lrs is None:
        return train(model, make_tx(None), dataset, **common)
    return train(model, make_tx, dataset, learning_rate=lrs[0], **common)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 data problem, 2 bad arguments)."""
    try:
        args = build_parser().parse_args(argv)
        started = datetime.datetime.now(datetime.timezone.utc)
        t0 = time.perf_counter()
        result = run(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (DataNotFoundError, IDXError, ChecksumError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    lr = "default" if args.learning_rate is None else ",".join(f"{v:g}" for v in args.learning_rate)
    options = [f"lr {lr}"] + [
        f"{name} {value}"
        for name, value in (("momentum", args.momentum), ("weight decay", args.weight_decay))
        if value is not None
    ]
    options += ["nesterov"] if args.nesterov else []
    options += ["flat"] if args.flat else []
    title = (
        f"{args.dataset}, {args.model}, {args.optimizer} ({', '.join(options)}), "
        f"{result.steps} steps of batch {result.batch_size}, {len(result.runs)} run(s)"
    )
    print(summary_table(result, title))
    if args.json:
        payload = {
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
            **result.to_dict(),
            "date": started.isoformat(timespec="seconds"),
            "elapsed_seconds": time.perf_counter() - t0,
            "device": str(jax.devices()[0]),
            "versions": _versions(),
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    if args.plot:
        save_plot(result, args.plot, title)
    return 0
