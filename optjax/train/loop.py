"""Training: a pure, jitted train step over (state, batch), evaluation, and many runs (seeds,
learning rates) trained at once by ``jax.vmap`` inside one jitted program.

The model is split once into a static graph definition, its parameters and its other state
(e.g. dropout RNG counters), each a pytree of arrays; the step merges them back inside the trace,
so it is a pure function that jits, vmaps and donates its buffers. Any object with optax's
``init``/``update`` protocol works as the optimizer.

A call of `train` or `sweep` goes through these stages, each a function below: check the
`RunConfig` and the runs (`_check_runs`); build the runs' state, programs and device data
(`_setup`); continue from a checkpoint (`_resume`); then, chunk by chunk, train ``log_every``
steps (`_Steps`), save, evaluate (`_Evaluation`) and record (`_History`); finally build the
result (`_result`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from optjax import checkpoint as optjax_checkpoint
from optjax import core
from optjax._checks import check_learning_rate, check_positive_int
from optjax.flat import FlatLayout, as_tree
from optjax.sharding import zero1_spec
from optjax.train.data import BatchSampler, Dataset
from optjax.train.models import MODELS
from optjax.train.results import Progress, RunResult, TrainResult

__all__ = [
    "ModelFn",
    "OptimizerFactory",
    "RunConfig",
    "TrainState",
    "accuracy",
    "cross_entropy",
    "eval_graphdef",
    "init_runs",
    "init_train_state",
    "loss_and_metrics",
    "make_train_step",
    "model_fn_from",
    "scale_images",
    "split_model",
    "sweep",
    "train",
    "train_step",
]

ModelFn = Callable[..., nnx.Module]  # called as model(rngs=nnx.Rngs(seed))
_MIN_SPLIT = 1024  # leaves with fewer elements stay whole on every device (zero=, fsdp=)
OptimizerFactory = Callable[[jax.Array], Any]  # learning rate -> GradientTransformation


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How runs are trained; every value is checked once, here (ValueError naming it).

    ``steps`` steps of ``batch_size`` examples each, run ``log_every`` at a time (one call, one
    progress report); the test set is evaluated in batches of ``eval_batch_size`` every
    ``eval_every`` steps (rounded up to a multiple of ``log_every``; None: only at the end) and
    at the end. ``checkpoint=DIR`` saves the train state after every ``log_every`` steps, in a
    step directory of DIR (optjax.checkpoint.Checkpointer: each array written by the devices
    that hold it, the last 3 steps kept), with the run's settings: its batch size, seeds,
    learning rates, dataset and layout, and ``settings``, any other JSON values that identify
    it (the command line stores its arguments). ``resume=True`` continues from DIR's latest
    step exactly as the uninterrupted run would have, on the same mesh or another; a resume
    whose settings differ is refused. ``flat=True`` holds params and optimizer state in
    contiguous buffers (optjax.flat): the same numbers, one fused update over the buffers
    instead of one per leaf.

    ``mesh`` (a jax.sharding.Mesh with a ``"data"`` axis) trains data-parallel: each batch is
    split over the data axis, the parameters are replicated and the gradients summed across
    devices, the same numbers as one device to rounding. With ``zero=True`` the optimizer state
    is split over the data axis too (ZeRO-1); with ``fsdp=True`` the parameters and their state
    are (FSDP). Each large leaf is split on its largest dimension the axis divides
    (optjax.sharding.zero1_spec).

    `train` and `sweep` take these fields as keyword arguments, or a whole ``config=``.

    Example:
        >>> RunConfig(steps=3000, eval_every=500).eval_interval
        500
        >>> RunConfig(steps=100, log_every=0)
        Traceback (most recent call last):
        ValueError: log_every must be an integer >= 1, got log_every=0
    """

    steps: int
    batch_size: int = 100
    log_every: int = 100
    eval_every: int | None = None
    eval_batch_size: int = 1000
    checkpoint: str | os.PathLike[str] | None = None
    resume: bool = False
    flat: bool = False
    mesh: jax.sharding.Mesh | None = None
    zero: bool = False
    fsdp: bool = False
    settings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "eval_batch_size"):
            check_positive_int(name, getattr(self, name))
        if self.eval_every is not None:
            check_positive_int("eval_every", self.eval_every)
        for name in ("resume", "flat", "zero", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"{name} must be True or False, got {name}={getattr(self, name)!r}"
                )
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise ValueError(
                f"checkpoint must be a directory path (str or os.PathLike) or None, "
                f"got checkpoint={self.checkpoint!r}"
            )
        if self.resume and self.checkpoint is None:
            raise ValueError(
                "resume=True needs checkpoint=DIR, the directory to resume from, got "
                "checkpoint=None"
            )
        if self.settings is not None:
            try:
                json.dumps(self.settings, allow_nan=False)
                ok = isinstance(self.settings, dict)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(
                    "settings must be a dict of JSON values (str keys; numbers, strings, lists) "
                    f"or None, got settings={self.settings!r}"
                )
        self._check_mesh()

    def _check_mesh(self) -> None:
        if self.mesh is None:
            for name in ("zero", "fsdp"):
                if getattr(self, name):
                    raise ValueError(f"{name}=True needs mesh=, a mesh with a 'data' axis")
            return
        if not isinstance(self.mesh, jax.sharding.Mesh) or "data" not in self.mesh.axis_names:
            raise ValueError(
                f"mesh must be a jax.sharding.Mesh with a 'data' axis, got mesh={self.mesh!r}"
            )
        if self.zero and self.fsdp:
            raise ValueError("zero=True and fsdp=True: choose one (FSDP splits the state too)")
        if self.flat:
            raise ValueError("flat=True is not supported with mesh= yet: use the tree layout")
        n = self.data_devices
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) % n:
                raise ValueError(
                    f"{name} must be a multiple of the mesh's data axis ({n} devices), "
                    f"got {name}={getattr(self, name)}"
                )

    @property
    def data_devices(self) -> int:
        """Devices along the mesh's data axis (1 without a mesh)."""
        return 1 if self.mesh is None else int(self.mesh.shape["data"])

    @property
    def eval_interval(self) -> int:
        """Steps between evaluations (``eval_every``, or ``steps``: only at the end)."""
        return self.eval_every or self.steps


_OPTIONS = tuple(field.name for field in dataclasses.fields(RunConfig))


def _config(caller: str, config: RunConfig | None, options: dict[str, Any]) -> RunConfig:
    """The RunConfig of a call to ``caller``: ``config`` with ``options`` (keyword arguments
    named like its fields) replacing its values, or ``RunConfig(**options)`` without one."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"the run options are {', '.join(_OPTIONS)}"
        )
    if config is None:
        if "steps" not in options:
            raise TypeError(f"{caller}() needs steps= (or config=RunConfig(steps=...))")
        return RunConfig(**options)
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **options)


class TrainState(NamedTuple):
    """What a train step carries from one step to the next."""

    params: Any  # the nnx.Param arrays: what the optimizer updates
    opt_state: Any  # the optimizer's state
    other: Any  # the model's other state (dropout RNG counters, batch statistics)


# ---------------------------------------------------------------- the model and its metrics


def _nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per example: the negative log-likelihood of the integer label under softmax(logits)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]


def _correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per example: 1.0 where the highest logit is the label's, else 0.0."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of integer ``labels`` under softmax(``logits``).

    Example:
        >>> cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])).round(4)  # log(4)
        Array(1.3863, dtype=float32)
    """
    return _nll(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The fraction of examples whose highest logit is their label's."""
    return _correct(logits, labels).mean()


def scale_images(images: jax.Array) -> jax.Array:
    """uint8 pixels to float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any, Any]:
    """``(graphdef, params, other)``: the static structure, the nnx.Param arrays, and the arrays
    of every other state (plain pytrees: no Variable wrappers)."""
    graphdef, params, *other = nnx.split(model, nnx.Param, ...)  # other: [everything else]
    return graphdef, nnx.as_pure(params), nnx.as_pure(other[0])


def init_train_state(model: nnx.Module, tx: Any) -> tuple[nnx.GraphDef, TrainState]:
    """The graph definition of ``model`` and its initial TrainState under optimizer ``tx``.

    The state holds copies of the model's arrays, so a donated step never consumes the model's.
    """
    graphdef, params, other = split_model(model)
    params, other = jax.tree.map(jnp.copy, (params, other))
    return graphdef, TrainState(params, tx.init(params), other)


def eval_graphdef(graphdef: nnx.GraphDef, params: Any, other: Any) -> nnx.GraphDef:
    """The graph definition of the same model in evaluation mode (``Module.eval()``: dropout off,
    batch norm on running averages)."""
    model = nnx.merge(graphdef, params, other)
    model.eval()
    return nnx.graphdef(model)


def model_fn_from(model: str | ModelFn) -> ModelFn:
    """A model constructor called as ``model(rngs=...)``: "mlp", "cnn" (their defaults), a class
    such as MLP, or any callable taking ``rngs``."""
    if callable(model):
        return model
    if model not in MODELS:
        raise ValueError(
            f"model must be one of {sorted(MODELS)} or a callable taking rngs=, got model={model!r}"
        )
    return MODELS[model]


def init_runs(model: str | ModelFn, seeds: Sequence[int]) -> tuple[nnx.GraphDef, Any, Any]:
    """``(graphdef, params, other)`` for each seed, the arrays stacked on a leading run axis
    (NumPy arrays but for RNG keys).

    Run ``i`` is initialised exactly as ``model(rngs=nnx.Rngs(seeds[i]))``. Built eagerly, one
    seed at a time: the per-op programs compile once per process, where a jitted init would
    recompile on every call; stacked in NumPy, which compiles nothing for a new number of runs.
    """
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got seeds=[]")
    model_fn = model_fn_from(model)
    splits = [split_model(model_fn(rngs=nnx.Rngs(int(seed)))) for seed in seeds]
    params, other = jax.tree.map(_stack, *[(p, o) for _, p, o in splits])
    return splits[0][0], params, other


def _stack(*xs):
    if jax.dtypes.issubdtype(xs[0].dtype, jax.dtypes.prng_key):  # RNG keys have no NumPy form
        return jnp.stack(xs)
    return np.stack([np.asarray(x) for x in xs])


def loss_and_metrics(
    graphdef: nnx.GraphDef, params: Any, other: Any, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """``(loss, (accuracy, other))``: the cross-entropy of ``merge(graphdef, params, other)`` on
    a batch, its accuracy, and the model's other state after the call (RNG counts advanced).
    ``params`` may be flat (optjax.flat.FlatBuffers): the model then sees their views."""
    model = nnx.merge(graphdef, as_tree(params), other)
    logits = model(images)
    other = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))
    return cross_entropy(logits, labels), (accuracy(logits, labels), other)


def train_step(
    graphdef: nnx.GraphDef, tx: Any, state: TrainState, images: jax.Array, labels: jax.Array
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One step: forward, backward, optimizer update. Pure; returns (state, loss, accuracy)."""
    grad_fn = jax.value_and_grad(loss_and_metrics, argnums=1, has_aux=True)
    (loss, (acc, other)), grads = grad_fn(graphdef, state.params, state.other, images, labels)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(core.apply_updates(state.params, updates), opt_state, other), loss, acc


def make_train_step(graphdef: nnx.GraphDef, tx: Any) -> Callable:
    """``step(state, images, labels) -> (state, loss, accuracy)``, jitted, with the state donated
    so the update runs in place (the arrays passed in are consumed: use the returned ones).

    Example:
        >>> from flax import nnx
        >>> from optjax.train import MLP, init_train_state, make_train_step
        >>> tx = optjax.sgd(0.1)
        >>> graphdef, state = init_train_state(MLP(hidden=(8,), rngs=nnx.Rngs(0)), tx)
        >>> step = make_train_step(graphdef, tx)
        >>> state, loss, acc = step(state, jnp.zeros((4, 784)), jnp.zeros(4, jnp.int32))
        >>> bool(loss > 0)
        True
    """

    def step(state, images, labels):
        return train_step(graphdef, tx, state, images, labels)

    return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------- many runs at once


class _Runs(NamedTuple):
    """What tells the runs apart: run i starts from ``seeds[i]`` and trains at
    ``learning_rates[i]`` (None: the optimizer is a fixed transform)."""

    seeds: list[int]
    learning_rates: list[float] | None


def _check_runs(runs: _Runs, dataset: Dataset, config: RunConfig) -> None:
    """What RunConfig cannot check alone: the learning rates, and the batch size against the
    data (the seeds are checked by init_runs)."""
    for lr in runs.learning_rates or ():
        check_learning_rate("learning_rate", lr)
    n_train = len(dataset.train_labels)
    if config.batch_size > n_train:
        raise ValueError(
            f"batch_size must be in [1, {n_train}] (the training set size), "
            f"got batch_size={config.batch_size}"
        )


def _init_state(make_tx, params, other, hypers, config: RunConfig) -> TrainState:
    """The runs' TrainState on the device, built by one jitted program (so a new number of runs
    compiles one program, not every eager op again), each leaf where `_state_shardings` puts it.
    With ``flat``, the params (and so the optimizer state) are packed into optjax.flat buffers,
    one layout for every run."""
    layout = FlatLayout.of(jax.tree.map(lambda x: x[0], params)) if config.flat else None

    def init(params, other, hypers):
        if layout is not None:
            params = jax.vmap(layout.flatten)(params)
        opt_state = jax.vmap(lambda p, h: make_tx(h).init(p))(params, hypers)
        return TrainState(params, opt_state, other)

    shardings = _state_shardings(config, jax.eval_shape(init, params, other, hypers))
    return jax.jit(init, out_shardings=shardings)(params, other, hypers)


def _padded_batches(images: np.ndarray, labels: np.ndarray, batch: int) -> list[tuple]:
    """The test set as device batches of equal size (one compile), the last padded and masked."""
    n = len(labels)
    batch = min(batch, n)
    pad = -n % batch
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return [
        (
            jnp.asarray(images[j : j + batch]),
            jnp.asarray(labels[j : j + batch]),
            jnp.asarray(mask[j : j + batch]),
        )
        for j in range(0, n + pad, batch)
    ]


class _DeviceData(NamedTuple):
    train_images: jax.Array  # (N, 28, 28) uint8: a chunk's batches are gathered on the device
    train_labels: jax.Array  # (N,) int32
    test: list[tuple]  # equal (images, labels, mask) batches, the last padded


def _place(config: RunConfig, x, spec: PartitionSpec | None = None):
    """``x`` (an array or a tree) on the device; with a mesh, laid out on it as ``spec``
    (replicated if None). Over several processes, each passes the same host value."""
    if config.mesh is None:
        return jax.tree.map(jnp.asarray, x)
    return jax.device_put(x, NamedSharding(config.mesh, spec or PartitionSpec()))


def _device_data(dataset: Dataset, config: RunConfig) -> _DeviceData:
    """The dataset on the device; with a mesh the training set is on every device (each step
    gathers its batch there) and each test batch is split over the data axis."""
    test = _padded_batches(
        dataset.test_images, dataset.test_labels.astype(np.int32), config.eval_batch_size
    )
    split = PartitionSpec("data") if len(test[0][2]) % config.data_devices == 0 else None
    return _DeviceData(
        _place(config, dataset.train_images),
        _place(config, np.asarray(dataset.train_labels, np.int32)),
        [tuple(_place(config, x, split) for x in batch) for batch in test],
    )


def _state_shardings(config: RunConfig, state: TrainState) -> TrainState | None:
    """Where each leaf of the runs' state lives on the mesh (None without one). Leaves carry a
    leading run axis, never split; the rest is replicated, except what ``zero`` (the optimizer
    state) or ``fsdp`` (the parameters and the optimizer state) split over the data axis."""
    if config.mesh is None:
        return None
    mesh, n = config.mesh, config.data_devices

    def split(x):
        spec = zero1_spec(tuple(x.shape[1:]), PartitionSpec(), "data", n, _MIN_SPLIT)
        return NamedSharding(mesh, PartitionSpec(None, *spec))

    def replicated(x):
        return NamedSharding(mesh, PartitionSpec())

    return TrainState(
        jax.tree.map(split if config.fsdp else replicated, state.params),
        jax.tree.map(split if config.zero or config.fsdp else replicated, state.opt_state),
        jax.tree.map(replicated, state.other),
    )


def _make_step(graphdef, make_tx: OptimizerFactory, state_shardings: TrainState | None = None):
    """One step of all R runs at once (vmap over the state and the hyperparameter), jitted with
    the state donated. Run r's batch is ``idx[i, r]``, indices into the training set held on the
    device, so a chunk of indices crosses to the device once; the runs' loss and accuracy go to
    ``metrics[i]`` (donated too, shape (chunk, 2, R)), so a chunk's metrics come back in one copy.

    Steps are dispatched one call each (asynchronously) rather than looped with lax.scan inside
    one program: XLA:CPU runs convolutions inside a loop tens of times slower than at top level.
    """

    def one_run(state, hyper, images, labels):
        return train_step(graphdef, make_tx(hyper), state, scale_images(images), labels)

    def step(state, metrics, hypers, train_images, train_labels, idx, i):
        run_idx = jax.lax.dynamic_index_in_dim(idx, i, keepdims=False)  # (R, batch)
        images, labels = train_images[run_idx], train_labels[run_idx]
        state, loss, acc = jax.vmap(one_run)(state, hypers, images, labels)
        metrics = jax.lax.dynamic_update_index_in_dim(metrics, jnp.stack([loss, acc]), i, 0)
        return state, metrics

    if state_shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    # The state keeps its layout from step to step (ZeRO-1: each device updates its slice of
    # the optimizer state and the parameters are gathered back); the metrics are replicated.
    replicated = NamedSharding(jax.tree.leaves(state_shardings)[0].mesh, PartitionSpec())
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=(state_shardings, replicated))


class _Chunk(NamedTuple):
    steps: int  # how many steps the chunk took (log_every, or fewer at the end)
    loss: np.ndarray  # (steps, R): each step's training loss of each run
    accuracy: np.ndarray  # (steps, R)
    seconds: float  # wall time of the chunk, waiting for its results included


class _Steps:
    """Trains every run a chunk of steps at a time: the jitted step of all runs (compiled on the
    first chunk, timed apart), each run's batch indices from its own sampler, and the chunk's
    metrics buffer. ``compile_seconds`` and ``run_seconds`` add up the time taken."""

    def __init__(self, graphdef, make_tx, hypers, data: _DeviceData, samplers, config, shardings):
        self.step_fn = _make_step(graphdef, make_tx, shardings)
        self.hypers, self.data, self.samplers = hypers, data, samplers
        self.config = config
        self.log_every, self.batch_size = config.log_every, config.batch_size
        metrics = np.zeros((config.log_every, 2, len(samplers)), np.float32)
        self.metrics = _place(config, metrics)
        self.compiled: Any = None
        self.compile_seconds = self.run_seconds = 0.0

    def _indices(self, k: int) -> jax.Array:
        """The next k batches of every run, padded to a fixed shape (one compile)."""
        idx = np.zeros((self.log_every, len(self.samplers), self.batch_size), np.int32)
        idx[:k] = np.stack([s.take(k) for s in self.samplers], axis=1)
        return _place(self.config, idx, PartitionSpec(None, None, "data"))  # a batch split

    def __call__(self, state: TrainState, k: int) -> tuple[TrainState, _Chunk]:
        """Take ``k`` steps (at most ``log_every``); the state passed in is consumed."""
        idx = self._indices(k)
        data = (self.hypers, self.data.train_images, self.data.train_labels, idx)
        if self.compiled is None:
            t0 = time.perf_counter()
            self.compiled = self.step_fn.lower(state, self.metrics, *data, np.int32(0)).compile()
            self.compile_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(k):
            state, self.metrics = self.compiled(state, self.metrics, *data, np.int32(i))
            if self.config.mesh is not None:
                # One step in flight: XLA:CPU's devices share a small thread pool, and queued
                # steps whose collectives wait for each other can take every thread (deadlock).
                jax.block_until_ready(self.metrics)
        metrics = np.array(self.metrics)[:k]  # a copy (the next call donates metrics); waits
        seconds = time.perf_counter() - t0
        self.run_seconds += seconds
        return state, _Chunk(k, metrics[:, 0], metrics[:, 1], seconds)


class _Evaluation:
    """``evaluate(params, other) -> (loss, accuracy)``, one value per run over the whole test
    set: one jitted call per padded batch, masked sums kept on the device until the end."""

    def __init__(self, graphdef_eval: nnx.GraphDef, test: list[tuple], count: int, config):
        def batch_sums(params, other, images, labels, mask):
            def one_run(p, o):
                logits = nnx.merge(graphdef_eval, as_tree(p), o)(scale_images(images))
                return (_nll(logits, labels) * mask).sum(), (_correct(logits, labels) * mask).sum()

            return jax.vmap(one_run)(params, other)

        # On a mesh the sums come back on every device, so any process can read them.
        out = None if config.mesh is None else NamedSharding(config.mesh, PartitionSpec())
        self.sums, self.test = jax.jit(batch_sums, out_shardings=out), test
        self.count = count  # the unpadded size

    def __call__(self, params, other) -> tuple[np.ndarray, np.ndarray]:
        on_mesh = len(jax.tree.leaves(params)[0].sharding.device_set) > 1
        totals = []
        for batch in self.test:
            totals.append(self.sums(params, other, *batch))
            if on_mesh:  # one call in flight on a mesh (see _Steps)
                jax.block_until_ready(totals[-1])
        totals = jax.device_get(totals)
        nll = np.sum([t[0] for t in totals], axis=0)
        correct = np.sum([t[1] for t in totals], axis=0)
        return nll / self.count, correct / self.count


class _Setup(NamedTuple):
    """What a call builds before its first step."""

    state: TrainState  # every run's initial state, stacked on a leading run axis
    samplers: list[BatchSampler]  # each run's data order
    steps: _Steps
    evaluate: _Evaluation
    graphdef_eval: nnx.GraphDef  # the model in evaluation mode, for the result


def _setup(model, make_tx, runs: _Runs, dataset: Dataset, config: RunConfig) -> _Setup:
    """The runs' initial state, their samplers, the step and evaluation programs, and the data
    on the device."""
    graphdef, params, other = init_runs(model, runs.seeds)  # NumPy, the same in every process
    hypers = _place(config, np.asarray(runs.learning_rates or [0.0] * len(runs.seeds), np.float32))
    placed_params, placed_other = _place(config, params), _place(config, other)
    state = _init_state(make_tx, placed_params, placed_other, hypers, config)
    shardings = jax.tree.map(lambda x: x.sharding, state) if config.mesh is not None else None
    first = jax.tree.map(lambda x: x[0], (params, other))  # NumPy: compiles nothing
    graphdef_eval = eval_graphdef(graphdef, *first)
    n_train = len(dataset.train_labels)
    samplers = [BatchSampler(n_train, config.batch_size, seed) for seed in runs.seeds]
    data = _device_data(dataset, config)
    steps = _Steps(graphdef, make_tx, hypers, data, samplers, config, shardings)
    evaluate = _Evaluation(graphdef_eval, data.test, len(dataset.test_labels), config)
    return _Setup(state, samplers, steps, evaluate, graphdef_eval)


def _settings(runs: _Runs, dataset: Dataset, config: RunConfig) -> dict[str, Any]:
    """What identifies the runs beyond their length and devices, as a checkpoint stores it."""
    rates = runs.learning_rates
    values = {
        "dataset": dataset.name,
        "batch_size": config.batch_size,
        "seeds": [int(seed) for seed in runs.seeds],
        "learning_rates": None if rates is None else [float(rate) for rate in rates],
        "flat": config.flat,
        **(config.settings or {}),
    }
    return json.loads(json.dumps(values))  # as it reads back (tuples as lists)


def _open_checkpoints(
    config: RunConfig, settings: dict[str, Any]
) -> optjax_checkpoint.Checkpointer | None:
    """The run's checkpoint directory, checked before anything is built: a new run refuses one
    that holds steps already; a resumed one needs a step saved with the same ``settings``, and
    a refusal names the first setting that differs."""
    if config.checkpoint is None:
        return None
    checkpoints = optjax_checkpoint.Checkpointer(config.checkpoint)
    where, step = checkpoints.directory, checkpoints.latest_step()
    problem = None
    if not config.resume and step is not None:
        problem = (
            f"checkpoint={where!r} holds steps {checkpoints.all_steps()} already: pass "
            "resume=True to continue from them, or another directory"
        )
    elif config.resume and step is None:
        problem = f"resume=True, but checkpoint={where!r} holds no step to resume from"
    elif config.resume:
        saved = checkpoints.metadata(step)
        for key in [*settings, *(k for k in saved if k not in settings)]:
            if saved.get(key) != settings.get(key):
                problem = (
                    f"cannot resume from {where!r}: it was saved with {key}={saved.get(key)!r}, "
                    f"this run has {key}={settings.get(key)!r}"
                )
                break
    if problem is not None:
        checkpoints.close()
        raise ValueError(problem)
    return checkpoints


def _resume(
    checkpoints: optjax_checkpoint.Checkpointer, steps: int, state: TrainState, samplers
) -> tuple[TrainState, int]:
    """The state at the latest step in ``checkpoints``, laid out like ``state`` (the template:
    the mesh saved from or another), with each sampler advanced past the batches already taken."""
    step = checkpoints.latest_step() or 0  # _open_checkpoints checked there is one
    if step >= steps:
        raise ValueError(
            f"the checkpoint {checkpoints.directory!r} is at step {step}; steps={steps} leaves "
            "nothing to run"
        )
    state = checkpoints.restore({"state": state}, step)["state"]
    for sampler in samplers:  # replay the data order up to the checkpoint
        sampler.take(step)
    return state, step


class _History:
    """The curves: the training metrics after every chunk (averaged over its steps) and the
    test metrics after every evaluation, one column per run."""

    def __init__(self) -> None:
        keys = ("step", "train_loss", "train_accuracy", "eval_step", "test_loss", "test_accuracy")
        self.columns: dict[str, list] = {key: [] for key in keys}

    def record_chunk(self, step: int, chunk: _Chunk) -> None:
        self._append(
            step=step, train_loss=chunk.loss.mean(0), train_accuracy=chunk.accuracy.mean(0)
        )

    def record_evaluation(self, step: int, loss: np.ndarray, accuracy: np.ndarray) -> None:
        self._append(eval_step=step, test_loss=loss, test_accuracy=accuracy)

    def _append(self, **values) -> None:
        for key, value in values.items():
            self.columns[key].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(values) for key, values in self.columns.items()}


def _result(
    runs: _Runs, setup: _Setup, state: TrainState, history: _History, config: RunConfig, start
) -> TrainResult:
    hist = history.arrays()
    results = [
        RunResult(
            seed,
            None if runs.learning_rates is None else float(runs.learning_rates[i]),
            float(hist["test_accuracy"][-1, i]),
            float(hist["test_loss"][-1, i]),
            float(hist["train_loss"][-1, i]),
        )
        for i, seed in enumerate(runs.seeds)
    ]
    return TrainResult(
        results,
        hist,
        config.steps,
        config.batch_size,
        time.perf_counter() - start,
        setup.steps.compile_seconds,
        config.steps / setup.steps.run_seconds,
        setup.graphdef_eval,
        _readable(jax.jit(jax.vmap(as_tree))(state.params) if config.flat else state.params),
        _readable(state.other),
    )


def _readable(tree):
    """``tree`` with every leaf whole in this process: leaves split over the devices of several
    processes are gathered onto every device (each process then holds all of it)."""
    leaves = jax.tree.leaves(tree)
    if all(x.is_fully_addressable for x in leaves if isinstance(x, jax.Array)):
        return tree
    mesh = next(x.sharding.mesh for x in leaves if isinstance(x.sharding, NamedSharding))
    return jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, PartitionSpec()))(tree)


def _run(model, make_tx, runs: _Runs, dataset: Dataset, config: RunConfig, callback) -> TrainResult:
    """Train the runs as ``config`` says; a checkpoint is saved after every chunk (before the
    next one donates the state's buffers), the test set evaluated when due and at the end."""
    start = time.perf_counter()
    _check_runs(runs, dataset, config)
    settings = _settings(runs, dataset, config)
    checkpoints = _open_checkpoints(config, settings)
    with checkpoints if checkpoints is not None else contextlib.nullcontext():  # waits at the end
        setup = _setup(model, make_tx, runs, dataset, config)
        state, step = setup.state, 0
        if config.resume and checkpoints is not None:
            state, step = _resume(checkpoints, config.steps, state, setup.samplers)
        next_eval = min((step // config.eval_interval + 1) * config.eval_interval, config.steps)
        history = _History()
        while step < config.steps:
            state, chunk = setup.steps(state, min(config.log_every, config.steps - step))
            step += chunk.steps
            if checkpoints is not None:  # written in the background from a copy on the host
                checkpoints.save(step, {"state": state}, metadata=settings)
            history.record_chunk(step, chunk)
            test_accuracy = None
            if step >= next_eval or step == config.steps:
                loss, acc = setup.evaluate(state.params, state.other)
                history.record_evaluation(step, loss, acc)
                test_accuracy, next_eval = float(acc.mean()), step + config.eval_interval
            if callback is not None:
                loss_mean, acc_mean = float(chunk.loss.mean()), float(chunk.accuracy.mean())
                speed = chunk.steps / chunk.seconds
                callback(Progress(step, config.steps, loss_mean, acc_mean, speed, test_accuracy))
    return _result(runs, setup, state, history, config, start)


def _is_transform(optimizer) -> bool:
    return hasattr(optimizer, "init") and hasattr(optimizer, "update")


def train(
    model: str | ModelFn,
    optimizer: Any,
    dataset: Dataset,
    *,
    seeds: Sequence[int] = (0,),
    learning_rate: float | None = None,
    callback: Callable[[Progress], None] | None = None,
    config: RunConfig | None = None,
    **options: Any,
) -> TrainResult:
    """Train one model per seed, all at once: one jitted program vmaps the train step over the
    runs (per-seed initialisation ``model(rngs=nnx.Rngs(seed))`` and per-seed data order).

    ``optimizer`` is a transform (optjax, optax, or anything with ``init``/``update``), or a
    factory ``learning_rate -> transform`` together with ``learning_rate``. ``model`` is "mlp",
    "cnn", or a callable ``model(rngs=...) -> nnx.Module`` (e.g. ``MLP``, or a lambda).
    ``callback`` sees a Progress after every ``log_every`` steps.

    ``options`` are the fields of RunConfig: ``steps`` (required), ``batch_size=100``,
    ``log_every=100``, ``eval_every=None``, ``eval_batch_size=1000``, ``checkpoint=None``,
    ``resume=False``, ``flat=False``, ``mesh=None``, ``zero=False``, ``fsdp=False`` (see
    RunConfig); or pass ``config=RunConfig(...)``, whose
    values the keywords given replace. With ``flat=True``, ``result.params`` is still the
    model's tree.

    Example:
        >>> from optjax.train import Dataset, MLP, train
        >>> rng = np.random.default_rng(0)
        >>> images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
        >>> labels = rng.integers(0, 10, 64).astype(np.int32)
        >>> data = Dataset("noise", images, labels, images, labels)
        >>> result = train(MLP, optjax.sgd(0.1), data, steps=4, batch_size=16, seeds=[0, 1])
        >>> [run.seed for run in result.runs], result.history["train_loss"].shape
        ([0, 1], (1, 2))
    """
    run_config = _config("train", config, options)
    seeds = [int(s) for s in seeds]
    if _is_transform(optimizer):
        if learning_rate is not None:
            raise ValueError(
                "learning_rate is for an optimizer factory; this optimizer is a transform already"
            )
        make_tx, runs = (lambda _: optimizer), _Runs(seeds, None)
    else:
        if learning_rate is None:
            raise ValueError(
                "an optimizer factory (learning_rate -> transform) needs learning_rate="
            )
        make_tx, runs = optimizer, _Runs(seeds, [learning_rate] * len(seeds))
    return _run(model, make_tx, runs, dataset, run_config, callback)


def sweep(
    model: str | ModelFn,
    optimizer: OptimizerFactory,
    dataset: Dataset,
    *,
    learning_rates: Sequence[float],
    seeds: Sequence[int] = (0,),
    callback: Callable[[Progress], None] | None = None,
    config: RunConfig | None = None,
    **options: Any,
) -> TrainResult:
    """Train one model per (learning rate, seed) pair, all in one vmapped program: the learning
    rate is a traced array passed to ``optimizer`` (e.g. ``optjax.adam``) inside the vmapped
    step. Runs are ordered learning rate first, then seed. Other arguments as in `train`.
    """
    run_config = _config("sweep", config, options)
    if _is_transform(optimizer) or not callable(optimizer):
        raise ValueError(
            "sweep needs an optimizer factory learning_rate -> transform, e.g. optjax.adam"
        )
    if len(learning_rates) == 0:
        raise ValueError("learning_rates must hold at least one value, got []")
    pairs = [(float(lr), int(s)) for lr in learning_rates for s in seeds]
    runs = _Runs([s for _, s in pairs], [lr for lr, _ in pairs])
    return _run(model, optimizer, runs, dataset, run_config, callback)
