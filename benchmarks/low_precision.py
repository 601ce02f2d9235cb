"""Adam on MNIST with float32, bf16 and fp16 parameters: the 784-100-10 ReLU MLP, batch 100,
optjax.adam(1e-3) (torch.optim.Adam's defaults), the same seeds, initialisation (rounded) and
data order in every precision.

    python benchmarks/low_precision.py            # the table (a few minutes on a 2-core CPU)
    python benchmarks/low_precision.py --quick    # a tiny run that checks the output format

The low-precision models hold their parameters in bf16 or fp16 and compute in it (no float32
master copy, no loss scaling); only the logits are cast to float32 for the loss. Adam keeps its
second moment in float32 by default for such parameters; the rows with v in bf16 or fp16 pass
``nu_dtype`` to keep it in the parameters' dtype, as before, to show what that costs, and the
row with m in float32 passes ``mu_dtype`` (what is left of the gap is the parameters'). The
table gives each run's test accuracy, its final training loss and the distance of its training
loss curve (one mean per ``--log-every`` steps) to float32's.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx
from mnist_optimizers import header

import optjax
from optjax.train import MLP, load_dataset, train


class CastMLP(nnx.Module):
    """optjax.train.MLP with its parameters and its arithmetic in ``dtype`` (float32 logits)."""

    def __init__(self, dtype, *, rngs: nnx.Rngs):
        self.mlp = MLP(init="torch", rngs=rngs)
        for layer in self.mlp.layers:
            layer.kernel = nnx.Param(layer.kernel.get_value().astype(dtype))
            layer.bias = nnx.Param(layer.bias.get_value().astype(dtype))
            layer.dtype = dtype
        self.dtype = dtype

    def __call__(self, x):
        return self.mlp(x.astype(self.dtype)).astype(jnp.float32)


# (parameter dtype, Adam's mu_dtype and nu_dtype: None is the default, the params' dtype for m
# and float32 for v with bf16 and fp16 params)
ROWS = [
    (jnp.float32, None, None),
    (jnp.bfloat16, None, None),
    (jnp.bfloat16, jnp.float32, None),
    (jnp.bfloat16, None, jnp.bfloat16),
    (jnp.float16, None, None),
    (jnp.float16, None, jnp.float16),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny run: checks the format only")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, vmapped")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    steps, seeds, log_every = (
        (20, 1, 10) if args.quick else (args.steps, args.seeds, args.log_every)
    )

    dataset = load_dataset("mnist", args.data_dir)
    print(header("low_precision.py", argv))
    print(
        f"setup: MLP 784-100-10 ReLU (torch init), optjax.adam(1e-3), batch 100, {steps} "
        f"steps, seeds 0..{seeds - 1}; loss curves: means over {log_every} steps and the seeds\n"
    )
    print(
        "| params | Adam's m | Adam's v | test accuracy % (mean ± std) | final train loss "
        "| max abs. curve distance to float32 | max rel. distance | time (s) |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    reference = None
    for dtype, mu_dtype, nu_dtype in ROWS:
        t0 = time.perf_counter()
        result = train(
            lambda rngs, dtype=dtype: CastMLP(dtype, rngs=rngs),
            optjax.adam(1e-3, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
            dataset,
            steps=steps,
            batch_size=100,
            seeds=range(seeds),
            log_every=log_every,
        )
        curve = result.history["train_loss"].mean(axis=1)
        if reference is None:
            reference = curve
        distance = np.abs(curve - reference)
        with np.errstate(invalid="ignore"):
            absolute, relative = np.max(distance), np.max(distance / reference)
        m, v = jnp.dtype(mu_dtype or dtype).name, jnp.dtype(nu_dtype or jnp.float32).name
        print(
            f"| {jnp.dtype(dtype).name} | {m} | {v} "
            f"| {100 * result.mean:.2f} ± {100 * result.std:.2f} "
            f"| {curve[-1]:.4f} | {absolute:.4f} | {relative:.3f} "
            f"| {time.perf_counter() - t0:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
