"""``python -m optjax.train``: train an MLP or CNN on MNIST / Fashion-MNIST with any optjax
optimizer (or a torch.optim preset from optjax.torch_compat), several seeds at once.

Example:
    python -m optjax.train --dataset mnist --model mlp --optimizer adam --learning-rate 1e-3 \\
        --steps 3000 --batch-size 100 --seeds 0,1,2 --json results.json --plot curves.png
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import flax
import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.progress import Progress as RichProgress

import optjax
from optjax import _interrupt
from optjax import optimizers as optjax_optimizers
from optjax.train import launch
from optjax.train.data import DATASETS, ChecksumError, DataNotFoundError, IDXError, load_dataset
from optjax.train.loop import sweep, train
from optjax.train.models import CNN, INITS, MLP
from optjax.train.results import Progress, TrainResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PROG",
    "TORCH_PREFIX",
    "ProgressBar",
    "UsageError",
    "build_parser",
    "default_learning_rate",
    "figure",
    "main",
    "optimizer_names",
    "resolve_optimizer",
    "run",
    "run_labels",
    "save_plot",
    "summary_table",
    "torch_presets",
    "version_line",
]

PROG = _interrupt.PROG  # "python -m optjax.train"
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
    for name in optjax_optimizers.__all__:
        fn = getattr(optjax_optimizers, name)
        params = list(inspect.signature(fn).parameters) if inspect.isfunction(fn) else []
        if params and params[0] == "learning_rate":
            names.append(name)
    return sorted(names)


def _torch_compat():
    try:
        return importlib.import_module("optjax.torch_compat")
    except ImportError:
        return None


# Presets the training loop cannot drive: LBFGS evaluates the loss itself (its update takes
# value_fn=), torch.optim.Muon takes matrices only (a model's biases need another optimizer).
NOT_FOR_TRAINING = ("LBFGS", "Muon")


def torch_presets() -> list[str]:
    """The torch.optim presets usable by name ("torch.Adam", ...): optjax.torch_compat's
    optimizer functions (none where that module is not available)."""
    module = _torch_compat()
    if module is None:
        return []
    return sorted(
        TORCH_PREFIX + n
        for n, f in vars(module).items()
        if n[:1].isupper() and inspect.isfunction(f) and n not in NOT_FOR_TRAINING
    )


def _lookup(name: str) -> tuple[Callable, str]:
    """The optimizer function a command-line name stands for, and its learning rate argument's
    name ("lr" for torch presets); UsageError for an unknown name."""
    if not name.startswith(TORCH_PREFIX):
        known = optimizer_names()
        if name not in known:
            raise UsageError(
                f"unknown optimizer {name!r}; choose from {', '.join(known)}, "
                "or torch.<Name> (e.g. torch.Adam)"
            )
        return getattr(optjax_optimizers, name), "learning_rate"
    module = _torch_compat()
    if module is None:
        raise UsageError(f"optimizer {name!r} needs optjax.torch_compat, which is not available")
    presets = torch_presets()
    if name not in presets:
        raise UsageError(f"unknown torch preset {name!r}; choose from {', '.join(presets)}")
    return getattr(module, name[len(TORCH_PREFIX) :]), "lr"


def default_learning_rate(name: str) -> Any:
    """The learning rate optimizer ``name`` uses when none is given: its signature's default
    (e.g. 1e-3 for torch.Adam); ``inspect.Parameter.empty`` where it has none."""
    fn, lr_name = _lookup(name)
    parameter = inspect.signature(fn).parameters.get(lr_name)
    return inspect.Parameter.empty if parameter is None else parameter.default


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
    fn, lr_name = _lookup(name)
    signature = inspect.signature(fn).parameters
    for option in options:
        if option not in signature:
            raise UsageError(f"--{option.replace('_', '-')} does not apply to optimizer {name!r}")
    if learning_rate is None and lr_name in signature:
        if signature[lr_name].default is inspect.Parameter.empty:
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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, but where the default is None or off: those
    helps say in words what happens when the option is not given."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def version_line() -> str:
    return f"optjax {optjax.__version__} (jax {jax.__version__}, flax {flax.__version__})"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Train an MLP or CNN on MNIST or Fashion-MNIST with an optjax optimizer.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist", help="the dataset")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="the classifier")
    p.add_argument(
        "--hidden",
        type=_int_list,
        default=None,
        help="hidden sizes: the MLP's layers, or the CNN's dense layer (default: 100 for the MLP, "
        "256 for the CNN)",
    )
    p.add_argument(
        "--channels",
        type=_int_list,
        default=None,
        help="the CNN's two conv widths (default: 32,64)",
    )
    p.add_argument(
        "--dropout",
        type=_float_list,
        default=None,
        help="the CNN's dropout rates after its conv layers and its dense layer "
        "(default: 0.25,0.5)",
    )
    p.add_argument(
        "--init", choices=INITS, default="lecun", help="weight init: flax's (lecun) or torch.nn's"
    )
    presets = torch_presets()
    p.add_argument(
        "--optimizer",
        default=None,
        metavar="NAME",
        help=f"an optjax optimizer: {', '.join(optimizer_names())}"
        + (f"; or a torch.optim preset: {', '.join(presets)}" if presets else "")
        + " (default: adam, at learning rate 1e-3)",
    )
    p.add_argument(
        "--learning-rate",
        "--learning-rates",
        "--lr",
        type=_float_list,
        default=None,
        help="learning rate; a comma-separated list trains one run per rate (vmapped) "
        "(default: the optimizer's own default, shown in the summary)",
    )
    p.add_argument(
        "--momentum",
        type=float,
        default=None,
        help="for optimizers that take it (sgd, rmsprop, ...) (default: the optimizer's)",
    )
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (with --momentum)")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="for optimizers that take it (adamw, ...) (default: the optimizer's)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default: 3000)")
    p.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="training length in epochs, instead of --steps (default: --steps)",
    )
    p.add_argument("--batch-size", type=int, default=100, help="examples per step and run")
    p.add_argument(
        "--seeds", type=_int_list, default="0", help="comma-separated seeds, one run each (vmapped)"
    )
    p.add_argument("--log-every", type=int, default=100, help="steps per progress update")
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="steps between test evaluations (default: a tenth of --steps)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the dataset files (default: $OPTJAX_DATA_DIR, then the cache)",
    )
    p.add_argument("--no-download", action="store_true", help="never download the dataset")
    p.add_argument(
        "--json", metavar="PATH", default=None, help="write the results as JSON (default: none)"
    )
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="save the train state in DIR every --log-every steps, the last 3 kept, with the "
        "run's arguments (default: none)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint's latest step as if never stopped (refused if the "
        "run's arguments differ; --steps and the devices may)",
    )
    p.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="write a PNG of the loss and accuracy curves (default: none)",
    )
    p.add_argument(
        "--flat",
        action="store_true",
        help="hold params and optimizer state in flat buffers (optjax.flat): one fused update "
        "over a few buffers instead of one per leaf, same numbers",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="train data-parallel on N devices, each batch split over them (default: one); "
        "on a machine without accelerators, N CPU devices are made",
    )
    p.add_argument(
        "--zero",
        action="store_true",
        help="with --devices: split the optimizer state over the devices (ZeRO-1)",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="with --devices: split the parameters and their state over the devices (FSDP)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="P",
        help="with --devices N: run as P processes on this machine, N/P CPU devices each, "
        "joined by jax.distributed on 127.0.0.1 (default: one process)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one process of a cluster (TPU slice, SLURM, Open MPI): start the same command on "
        "every host; jax.distributed.initialize() finds the others",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class ProgressBar:
    """Training progress on a stream (stderr). On a terminal, a bar redrawn in place (rich);
    elsewhere (a log file, a pipe), a plain line at most every tenth of the run, with no control
    characters. The terminal's bar ends with the run's last step; use the bar as a context
    manager so that it also ends when training stops early.

    Example:
        >>> import io
        >>> bar = ProgressBar(io.StringIO())  # not a terminal: plain lines
        >>> bar(Progress(50, 100, 0.5, 0.9, 123.0, test_accuracy=0.95))
        >>> print(bar.stream.getvalue(), end="")
        [############------------] 50/100 loss 0.5000 acc 90.00% test 95.00% 123 steps/s
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24):
        self.stream, self.width = stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_tenth = -1
        self.test_accuracy: float | None = None  # the latest, shown until the next
        self._live: RichProgress | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the terminal's bar (the cursor goes to the next line); idempotent."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __call__(self, p: Progress) -> None:
        if p.test_accuracy is not None:
            self.test_accuracy = p.test_accuracy
        test = "" if self.test_accuracy is None else f" test {100 * self.test_accuracy:.2f}%"
        metrics = (
            f"loss {p.train_loss:.4f} acc {100 * p.train_accuracy:.2f}%{test} "
            f"{p.steps_per_second:.0f} steps/s"
        )
        if self.tty:
            self._draw(p, metrics)
        elif 10 * p.step // p.steps > self.last_tenth:
            self.last_tenth = 10 * p.step // p.steps
            done = self.width * p.step // p.steps
            bar = "#" * done + "-" * (self.width - done)
            self.stream.write(f"[{bar}] {p.step}/{p.steps} {metrics}\n")
            self.stream.flush()

    def _draw(self, p: Progress, metrics: str) -> None:
        if self._live is None:
            self._live = RichProgress(
                BarColumn(bar_width=self.width),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(file=self.stream, force_terminal=True, highlight=False),
                auto_refresh=False,  # drawn on each report: no thread
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.add_task("train", total=p.steps, completed=p.step, metrics=metrics)
            self._live.start()
        task = self._live.task_ids[0]
        self._live.update(task, completed=p.step, metrics=metrics, refresh=True)
        if p.step >= p.steps:
            self.close()


def _percent(mean: float, std: float | None, n: int) -> str:
    """An accuracy over n runs as "mean ± std % (n = N)"; one run has no std: "acc % (n = 1)"."""
    if std is None or n == 1:
        return f"{100 * mean:.2f} % (n = 1)"
    return f"{100 * mean:.2f} ± {100 * std:.2f} % (n = {n})"


def summary_table(result: TrainResult, title: str) -> str:
    """The title, one row per run, then the test accuracy: over all runs (mean ± sample std
    over seeds), or, for several learning rates, per learning rate and the best of them."""
    lines = [
        title,
        f"{'run':>3}  {'seed':>4}  {'learning rate':>13}  {'test acc':>8}  {'test loss':>9}",
    ]
    for i, r in enumerate(result.runs):
        lr = "-" if r.learning_rate is None else f"{r.learning_rate:.4g}"
        lines.append(
            f"{i:>3}  {r.seed:>4}  {lr:>13}  {100 * r.test_accuracy:7.2f}%  {r.test_loss:9.4f}"
        )
    groups = result.by_learning_rate()
    if len(groups) > 1:
        lines.append("test accuracy per learning rate (mean ± std over seeds):")
        lines += [
            f"  lr {g.learning_rate:.4g}: {_percent(g.mean, g.std, len(g.accuracies))}"
            for g in groups
        ]
        best = max(groups, key=lambda g: g.mean)
        lines.append(
            f"best learning rate: {best.learning_rate:.4g} "
            f"({100 * best.mean:.2f} % mean test accuracy)"
        )
    elif len(result.runs) == 1:
        lines.append(f"test accuracy: {_percent(result.mean, None, 1)}")
    else:
        lines.append(
            f"test accuracy: {100 * result.mean:.2f} ± {100 * result.std:.2f} % "
            f"(mean ± std over {len(result.runs)} runs)"
        )
    lines.append(
        f"time: {result.wall_seconds:.1f} s (compile {result.compile_seconds:.1f} s, "
        f"{result.steps_per_second:.0f} steps/s of {len(result.runs)} run(s) at once)"
    )
    return "\n".join(lines)


def run_labels(result: TrainResult) -> list[str]:
    """A name for each run in plots: what tells it apart from the others (its learning rate,
    its seed, or both)."""
    several_lrs = len({r.learning_rate for r in result.runs}) > 1
    several_seeds = len({r.seed for r in result.runs}) > 1
    labels = []
    for r in result.runs:
        parts = []
        if r.learning_rate is not None and (several_lrs or not several_seeds):
            parts.append(f"lr {r.learning_rate:.4g}")
        if several_seeds or not several_lrs:
            parts.append(f"seed {r.seed}")
        labels.append(", ".join(parts))
    return labels


def figure(result: TrainResult, title: str = "") -> Figure:
    """The loss (left) and accuracy (right) curves of every run, named by run_labels."""
    from matplotlib.figure import Figure  # lazy: matplotlib is needed only for --plot

    h = result.history
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, name in enumerate(run_labels(result)):
        style = {"color": f"C{i % 10}", "alpha": 0.8}
        label = {"label": name} if i < 10 else {}
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
    return fig


def save_plot(result: TrainResult, path: str, title: str = "") -> None:
    """A PNG of `figure`: the loss and accuracy curves of every run."""
    figure(result, title).savefig(path, dpi=100)


def _versions() -> dict:
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
    if args.checkpoint is not None:
        _check_checkpoint_dir(args.checkpoint, resume=args.resume)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install 'optjax[train]'"
        )
    if args.devices is not None:
        if args.devices < 1:
            raise UsageError(f"--devices must be an integer >= 1, got {args.devices}")
        if args.batch_size % args.devices:
            raise UsageError(
                f"--batch-size must be a multiple of --devices {args.devices}, "
                f"got {args.batch_size}"
            )
        if args.zero and args.fsdp:
            raise UsageError("give --zero or --fsdp, not both (FSDP splits the state too)")
        if args.flat:
            raise UsageError("--flat does not work with --devices yet")
    for flag in ("zero", "fsdp", "processes"):
        if getattr(args, flag) and args.devices is None:
            raise UsageError(f"--{flag} needs --devices N")
    if args.processes is not None:
        if args.processes < 1:
            raise UsageError(f"--processes must be an integer >= 1, got {args.processes}")
        if args.devices % args.processes:
            raise UsageError(
                f"--devices must be a multiple of --processes {args.processes}, got {args.devices}"
            )
        if args.distributed:
            raise UsageError("give --processes (on this machine) or --distributed, not both")
    lrs = args.learning_rate
    if lrs is not None and any(not 0 <= lr < float("inf") for lr in lrs):
        raise UsageError(f"--learning-rate must be finite and >= 0, got {','.join(map(str, lrs))}")


def _check_checkpoint_dir(path: str, *, resume: bool) -> None:
    """Refuse a --checkpoint directory that cannot be written, before any training: a file, a
    folder in a missing or unwritable one, a missing one to resume from. Writing is tried (a
    nameless temporary file), as permissions alone do not tell (root, read-only mounts)."""
    if "://" in path:  # a URL (gs://...): orbax's to check
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--checkpoint {path}: is a file, not a directory")
    if os.path.isdir(path):
        where = path
    elif resume:
        raise UsageError(
            f"--resume: --checkpoint {path} does not exist, so it holds no step to resume from"
        )
    else:
        where = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(where):
            raise UsageError(f"--checkpoint {path}: directory {where} does not exist")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as error:
        raise UsageError(
            f"--checkpoint {path}: cannot write in {where} ({error.strerror or error})"
        ) from None


def _model_from_args(args: argparse.Namespace) -> Callable:
    """The model constructor ``rngs -> nnx.Module`` the arguments describe."""
    for flag in ("hidden", "channels"):
        sizes = getattr(args, flag)
        if sizes is not None and any(size < 1 for size in sizes):
            raise UsageError(
                f"--{flag} sizes must be integers >= 1, got {','.join(map(str, sizes))}"
            )
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


def request_devices(args: Sequence[str]) -> None:
    """Ask JAX for ``--devices N`` CPU devices, before anything starts its backend (a machine
    with accelerators uses those; on one without, the CPU is split into N devices); a process
    that `launch.spawn` started, or one given ``--distributed``, joins its siblings instead.
    Called by ``python -m optjax.train``, a process of its own; elsewhere, set the devices
    yourself."""
    if launch.is_worker() or "--distributed" in args:
        launch.initialize(distributed=True)
        return
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--devices=") else None
        if arg == "--devices" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and value.isdigit() and int(value) > 1:
            try:
                jax.config.update("jax_num_cpu_devices", int(value))
            except RuntimeError:  # the backend is up already (in a test, say): use what is there
                pass


def _mesh_options(args: argparse.Namespace) -> dict:
    """The mesh (one "data" axis over --devices devices) and its layout options, if asked."""
    if args.devices is None:
        return {}
    available = jax.devices()
    if len(available) < args.devices:
        raise UsageError(
            f"--devices {args.devices}: only {len(available)} {available[0].platform} device(s); "
            "on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{args.devices} before starting"
        )
    mesh = jax.make_mesh(
        (args.devices,),
        ("data",),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=available[: args.devices],
    )
    return {"mesh": mesh, "zero": args.zero, "fsdp": args.fsdp}


# The arguments a checkpoint stores (besides the dataset, batch size, seeds and learning rates
# that every harness checkpoint stores), so that --resume with others is refused.
_RUN_ARGUMENTS = (
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "model",
    "hidden",
    "channels",
    "dropout",
    "init",
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
        raise UsageError("--resume needs --checkpoint DIR, the directory to resume from")
    if lrs is not None and len(lrs) > 1 and args.checkpoint is not None:
        raise UsageError("--checkpoint works with a single --learning-rate, not a sweep")
    dataset = load_dataset(args.dataset, args.data_dir, download_missing=not args.no_download)
    n = len(dataset.train_labels)
    if args.batch_size > n:
        raise UsageError(
            f"--batch-size must be at most {n} (the training set size), got {args.batch_size}"
        )
    steps = args.steps if args.epochs is None else max(1, round(args.epochs * n / args.batch_size))
    steps = 3000 if steps is None else steps
    config = {
        "steps": steps,
        "batch_size": args.batch_size,
        "log_every": min(args.log_every, steps),
        "eval_every": args.eval_every or max(1, steps // 10),
        "checkpoint": args.checkpoint,
        "resume": args.resume,
        "flat": args.flat,
        "settings": {name: getattr(args, name) for name in _RUN_ARGUMENTS},
        **_mesh_options(args),
    }
    bar = None if args.quiet else ProgressBar()
    with bar if bar is not None else contextlib.nullcontext():
        common = {"seeds": args.seeds, "callback": bar, **config}
        try:
            if lrs is not None and len(lrs) > 1:
                return sweep(model, make_tx, dataset, learning_rates=lrs, **common)
            if lrs is None:
                return train(model, make_tx(None), dataset, **common)
            return train(model, make_tx, dataset, learning_rate=lrs[0], **common)
        except ValueError as error:  # the checkpoint directory, say: one line, not a traceback
            raise UsageError(str(error)) from None


def _title(args: argparse.Namespace, result: TrainResult) -> str:
    """What was trained, with the learning rate used (the optimizer's default where none was
    given) and the options given."""
    if args.learning_rate is not None:
        lr = "lr " + ",".join(f"{v:g}" for v in args.learning_rate)
    else:
        default = default_learning_rate(args.optimizer)
        lr = (
            f"default lr {default:g}"
            if isinstance(default, (int, float))
            else f"default lr {default}"
        )
    options = [lr] + [
        f"{name} {value}"
        for name, value in (("momentum", args.momentum), ("weight decay", args.weight_decay))
        if value is not None
    ]
    options += ["nesterov"] if args.nesterov else []
    options += ["flat"] if args.flat else []
    if args.devices is not None:
        options += [f"{args.devices} devices"] + [f for f in ("zero", "fsdp") if getattr(args, f)]
    if jax.process_count() > 1:
        options += [f"{jax.process_count()} processes"]
    return (
        f"{args.dataset}, {args.model}, {args.optimizer} ({', '.join(options)}), "
        f"{result.steps} steps of batch {result.batch_size}, {len(result.runs)} run(s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 data problem, 2 bad arguments)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    try:
        _interrupt.restore()  # Ctrl-C from here on: the KeyboardInterrupt caught below
        if args.processes is not None and not launch.is_worker():
            _check_args(args)
            argv = sys.argv[1:] if argv is None else list(argv)
            return launch.spawn([*argv, "--quiet"], args.processes, args.devices)
        return _train_and_report(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (DataNotFoundError, IDXError, ChecksumError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for SIGINT, no traceback
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        if launch.is_worker() or args.distributed:
            jax.distributed.shutdown()


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinity (a diverged run's loss, say) replaced by None, which
    JSON writes as null: JSON has no NaN, and a bare ``NaN`` makes the file unreadable."""
    if isinstance(value, dict):
        return {key: _finite_or_null(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return _finite_or_null(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _train_and_report(args: argparse.Namespace) -> int:
    """Train, then (in process 0: every process has the results) print the table and write
    the files asked for."""
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    result = run(args)
    if jax.process_index() != 0:
        return 0
    title = _title(args, result)
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
        text = json.dumps(_finite_or_null(payload), indent=1, allow_nan=False)
        with open(args.json, "w") as f:  # written whole: the text is made first
            f.write(text)
    if args.plot:
        save_plot(result, args.plot, title)
    return 0
