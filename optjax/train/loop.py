"""Training: a pure, jitted train step over (state, batch), evaluation, and many runs (seeds,
learning rates) trained at once by ``jax.vmap`` inside one jitted program.

The model is split once into a static graph definition, its parameters and its other state
(e.g. dropout RNG counters), each a pytree of arrays; the step merges them back inside the trace,
so it is a pure function that jits, vmaps and donates its buffers. Any object with optax's
``init``/``update`` protocol works as the optimizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from optjax import checkpoint as optjax_checkpoint
from optjax import core
from optjax._checks import check_learning_rate, check_positive_int
from optjax.flat import FlatLayout, as_tree
from optjax.train.data import BatchSampler, Dataset
from optjax.train.models import MODELS
from optjax.train.results import Progress, RunResult, TrainResult

ModelFn = Callable[..., nnx.Module]  # called as model(rngs=nnx.Rngs(seed))
OptimizerFactory = Callable[[jax.Array], Any]  # learning rate -> GradientTransformation


class TrainState(NamedTuple):
    """What a train step carries from one step to the next."""

    params: Any  # the nnx.Param arrays: what the optimizer updates
    opt_state: Any  # the optimizer's state
    other: Any  # the model's other state (dropout RNG counters, batch statistics)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of integer ``labels`` under softmax(``logits``)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=1).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32).mean()


def scale_images(images: jax.Array) -> jax.Array:
    """uint8 pixels to float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any, Any]:
    """``(graphdef, params, other)``: the static structure, the nnx.Param arrays, and the arrays
    of every other state (plain pytrees: no Variable wrappers)."""
    graphdef, params, other = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.as_pure(params), nnx.as_pure(other)


def init_train_state(model: nnx.Module, tx) -> tuple[nnx.GraphDef, TrainState]:
    """The graph definition of ``model`` and its initial TrainState under optimizer ``tx``.

    The state holds copies of the model's arrays, so a donated step never consumes the model's.
    """
    graphdef, params, other = jax.tree.map(jnp.copy, split_model(model))
    return graphdef, TrainState(params, tx.init(params), other)


def eval_graphdef(graphdef: nnx.GraphDef, params, other) -> nnx.GraphDef:
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
    model_fn = model_fn_from(model)
    graphdef, runs = None, []
    for seed in seeds:
        graphdef, params, other = split_model(model_fn(rngs=nnx.Rngs(int(seed))))
        runs.append((params, other))
    params, other = jax.tree.map(_stack, *runs)
    return graphdef, params, other


def _stack(*xs):
    if jax.dtypes.issubdtype(xs[0].dtype, jax.dtypes.prng_key):  # RNG keys have no NumPy form
        return jnp.stack(xs)
    return np.stack([np.asarray(x) for x in xs])


def loss_and_metrics(graphdef: nnx.GraphDef, params, other, images, labels):
    """``(loss, (accuracy, other))``: the cross-entropy of ``merge(graphdef, params, other)`` on
    a batch, its accuracy, and the model's other state after the call (RNG counts advanced).
    ``params`` may be flat (optjax.flat.FlatBuffers): the model then sees their views."""
    model = nnx.merge(graphdef, as_tree(params), other)
    logits = model(images)
    other = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))
    return cross_entropy(logits, labels), (accuracy(logits, labels), other)


def train_step(graphdef: nnx.GraphDef, tx, state: TrainState, images: jax.Array, labels: jax.Array):
    """One step: forward, backward, optimizer update. Pure; returns (state, loss, accuracy)."""
    grad_fn = jax.value_and_grad(loss_and_metrics, argnums=1, has_aux=True)
    (loss, (acc, other)), grads = grad_fn(graphdef, state.params, state.other, images, labels)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(core.apply_updates(state.params, updates), opt_state, other), loss, acc


def make_train_step(graphdef: nnx.GraphDef, tx) -> Callable:
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


def _is_transform(optimizer) -> bool:
    return hasattr(optimizer, "init") and hasattr(optimizer, "update")


def _make_step(graphdef, make_tx: OptimizerFactory):
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

    return jax.jit(step, donate_argnums=(0, 1))


def _init_state(make_tx, params, other, hypers, flat: bool) -> TrainState:
    """The runs' TrainState on the device, built by one jitted program (so a new number of runs
    compiles one program, not every eager op again). With ``flat``, the params (and so the
    optimizer state) are packed into optjax.flat buffers, one layout for every run."""
    layout = FlatLayout.of(jax.tree.map(lambda x: x[0], params)) if flat else None

    def init(params, other, hypers):
        if layout is not None:
            params = jax.vmap(layout.flatten)(params)
        opt_state = jax.vmap(lambda p, h: make_tx(h).init(p))(params, hypers)
        return TrainState(params, opt_state, other)

    return jax.jit(init)(params, other, hypers)


def _make_evaluate(graphdef):
    """``evaluate(params, other, batches) -> (loss, accuracy)`` of every run over padded batches
    (images, labels, mask); one jitted call per batch, sums kept on the device until the end."""

    def batch_sums(params, other, images, labels, mask):
        def one_run(p, o):
            logits = nnx.merge(graphdef, as_tree(p), o)(scale_images(images))
            log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
            nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
            correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
            return (nll * mask).sum(), (correct * mask).sum()

        return jax.vmap(one_run)(params, other)

    sums = jax.jit(batch_sums)

    def evaluate(params, other, batches):
        totals = jax.device_get([sums(params, other, *batch) for batch in batches])
        count = sum(float(np.asarray(batch[2]).sum()) for batch in batches)
        nll = np.sum([t[0] for t in totals], axis=0)
        correct = np.sum([t[1] for t in totals], axis=0)
        return nll / count, correct / count

    return evaluate


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


def _run(
    model,
    make_tx,
    learning_rates,
    seeds,
    dataset: Dataset,
    *,
    steps,
    batch_size,
    log_every,
    eval_every,
    eval_batch_size,
    callback,
    checkpoint=None,
    resume=False,
    flat=False,
) -> TrainResult:
    """Train len(seeds) runs at once; run i uses seeds[i] and learning_rates[i] (None: the
    optimizer is a fixed transform). With ``flat``, params and optimizer state are held in
    optjax.flat buffers. With ``checkpoint``, the train state and step are saved
    there after every ``log_every`` steps; with ``resume`` too, training continues from it and
    takes exactly the steps the uninterrupted run would (same batches, same programs)."""
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("log_every", log_every)
    check_positive_int("eval_batch_size", eval_batch_size)
    if eval_every is not None:
        check_positive_int("eval_every", eval_every)
    for lr in learning_rates or ():
        check_learning_rate("learning_rate", lr)
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got seeds=[]")
    n_train = len(dataset.train_labels)
    if batch_size > n_train:
        raise ValueError(
            f"batch_size must be in [1, {n_train}] (the training set size), "
            f"got batch_size={batch_size}"
        )
    start = time.perf_counter()
    graphdef, params, other = init_runs(model, seeds)
    hypers = jnp.asarray(learning_rates or [0.0] * len(seeds), jnp.float32)
    state = _init_state(make_tx, params, other, hypers, flat)
    first = jax.tree.map(lambda x: x[0], (params, other))  # NumPy: compiles nothing
    graphdef_eval = eval_graphdef(graphdef, *first)
    evaluate = _make_evaluate(graphdef_eval)
    samplers = [BatchSampler(n_train, batch_size, int(s)) for s in seeds]
    train_x, train_y = (
        jnp.asarray(dataset.train_images),
        jnp.asarray(dataset.train_labels, jnp.int32),
    )
    test = _padded_batches(
        dataset.test_images, dataset.test_labels.astype(np.int32), eval_batch_size
    )
    step_fn = _make_step(graphdef, make_tx)
    metrics = jnp.asarray(np.zeros((log_every, 2, len(seeds)), np.float32))
    eval_every = eval_every or steps

    compiled, compile_seconds, run_seconds = None, 0.0, 0.0
    history = {
        k: []
        for k in ("step", "train_loss", "train_accuracy", "eval_step", "test_loss", "test_accuracy")
    }
    step, next_eval = 0, min(eval_every, steps)
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs checkpoint=PATH, the file to resume from")
        restored = optjax_checkpoint.restore(checkpoint, {"state": state, "step": 0})
        state, step = restored["state"], int(restored["step"])
        if step >= steps:
            raise ValueError(
                f"the checkpoint {checkpoint} is at step {step}; "
                f"steps={steps} leaves nothing to run"
            )
        for sampler in samplers:  # replay the data order up to the checkpoint
            sampler.take(step)
        next_eval = min((step // eval_every + 1) * eval_every, steps)
    while step < steps:
        k = min(log_every, steps - step)
        idx = np.zeros((log_every, len(seeds), batch_size), np.int32)  # a fixed shape: one compile
        idx[:k] = np.stack([s.take(k) for s in samplers], axis=1)
        idx = jnp.asarray(idx)
        if compiled is None:
            t0 = time.perf_counter()
            args = (state, metrics, hypers, train_x, train_y, idx, np.int32(0))
            compiled = step_fn.lower(*args).compile()
            compile_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(k):
            state, metrics = compiled(state, metrics, hypers, train_x, train_y, idx, np.int32(i))
        chunk = np.array(metrics)[:k]  # a copy (the next call donates metrics); waits
        loss, acc = chunk[:, 0], chunk[:, 1]  # (k, R) each
        chunk_seconds = time.perf_counter() - t0
        run_seconds += chunk_seconds
        step += k
        if checkpoint is not None:  # before the next call donates the state's buffers
            optjax_checkpoint.save(checkpoint, {"state": state, "step": step})
        history["step"].append(step)
        history["train_loss"].append(loss.mean(0))
        history["train_accuracy"].append(acc.mean(0))
        test_acc = None
        if step >= next_eval or step == steps:
            test_loss, test_acc_runs = evaluate(state.params, state.other, test)
            history["eval_step"].append(step)
            history["test_loss"].append(test_loss)
            history["test_accuracy"].append(test_acc_runs)
            test_acc = float(test_acc_runs.mean())
            next_eval = step + eval_every
        if callback is not None:
            progress = Progress(
                step, steps, float(loss.mean()), float(acc.mean()), k / chunk_seconds, test_acc
            )
            callback(progress)
    hist = {k: np.asarray(v) for k, v in history.items()}
    runs = [
        RunResult(
            int(seed),
            None if learning_rates is None else float(learning_rates[i]),
            float(hist["test_accuracy"][-1, i]),
            float(hist["test_loss"][-1, i]),
            float(hist["train_loss"][-1, i]),
        )
        for i, seed in enumerate(seeds)
    ]
    return TrainResult(
        runs,
        hist,
        steps,
        batch_size,
        time.perf_counter() - start,
        compile_seconds,
        steps / run_seconds,
        graphdef_eval,
        jax.jit(jax.vmap(as_tree))(state.params) if flat else state.params,
        state.other,
    )


def train(
    model: str | ModelFn,
    optimizer,
    dataset: Dataset,
    *,
    steps: int,
    batch_size: int = 100,
    seeds: Sequence[int] = (0,),
    learning_rate: float | None = None,
    log_every: int = 100,
    eval_every: int | None = None,
    eval_batch_size: int = 1000,
    callback: Callable[[Progress], None] | None = None,
    checkpoint: str | None = None,
    resume: bool = False,
    flat: bool = False,
) -> TrainResult:
    """Train one model per seed, all at once: one jitted program vmaps the train step over the
    runs (per-seed initialisation ``model(rngs=nnx.Rngs(seed))`` and per-seed data order).

    ``optimizer`` is a transform (optjax, optax, or anything with ``init``/``update``), or a
    factory ``learning_rate -> transform`` together with ``learning_rate``. ``model`` is "mlp",
    "cnn", or a callable ``model(rngs=...) -> nnx.Module`` (e.g. ``MLP``, or a lambda). Steps
    run ``log_every`` at a time (one call, one progress report); the test set is evaluated
    every ``eval_every`` steps (rounded up to a multiple of ``log_every``) and at the end.
    ``checkpoint=PATH`` saves the train state every ``log_every`` steps (optjax.checkpoint);
    ``resume=True`` continues from that file exactly as the uninterrupted run would have.
    ``flat=True`` holds params and optimizer state in contiguous buffers (optjax.flat): the same
    numbers, one fused update over the buffers instead of one per leaf; ``result.params`` is
    still the model's tree.

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
    seeds = [int(s) for s in seeds]
    if _is_transform(optimizer):
        if learning_rate is not None:
            raise ValueError(
                "learning_rate is for an optimizer factory; this optimizer is a transform already"
            )
        make_tx, lrs = (lambda _: optimizer), None
    else:
        if learning_rate is None:
            raise ValueError(
                "an optimizer factory (learning_rate -> transform) needs learning_rate="
            )
        make_tx, lrs = optimizer, [learning_rate] * len(seeds)
    return _run(
        model,
        make_tx,
        lrs,
        seeds,
        dataset,
        steps=steps,
        batch_size=batch_size,
        log_every=log_every,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        callback=callback,
        checkpoint=checkpoint,
        resume=resume,
        flat=flat,
    )


def sweep(
    model: str | ModelFn,
    optimizer: OptimizerFactory,
    dataset: Dataset,
    *,
    learning_rates: Sequence[float],
    steps: int,
    batch_size: int = 100,
    seeds: Sequence[int] = (0,),
    log_every: int = 100,
    eval_every: int | None = None,
    eval_batch_size: int = 1000,
    callback: Callable[[Progress], None] | None = None,
    flat: bool = False,
) -> TrainResult:
    """Train one model per (learning rate, seed) pair, all in one vmapped program: the learning
    rate is a traced array passed to ``optimizer`` (e.g. ``optjax.adam``) inside the vmapped
    step. Runs are ordered learning rate first, then seed. Other arguments as in `train`.
    """
    if _is_transform(optimizer) or not callable(optimizer):
        raise ValueError(
            "sweep needs an optimizer factory learning_rate -> transform, e.g. optjax.adam"
        )
    if len(learning_rates) == 0:
        raise ValueError("learning_rates must hold at least one value, got []")
    pairs = [(float(lr), int(s)) for lr in learning_rates for s in seeds]
    return _run(
        model,
        optimizer,
        [lr for lr, _ in pairs],
        [s for _, s in pairs],
        dataset,
        steps=steps,
        batch_size=batch_size,
        log_every=log_every,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        callback=callback,
        flat=flat,
    )
