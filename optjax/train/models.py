"""The classifiers: a multilayer perceptron and a small convolutional network (flax.nnx).

Both take uint8-derived float images in [0, 1], shape (batch, 28, 28) (or (batch, 28, 28, 1)),
and return logits (batch, num_classes). ``init="lecun"`` is flax's default (LeCun-normal weights,
zero biases); ``init="torch"`` is torch.nn's default for Linear and Conv2d (weights and biases
uniform in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from optjax._checks import check_choice, check_positive_int

__all__ = ["CNN", "INITS", "MLP", "MODELS"]

INITS = ("lecun", "torch")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _layer_inits(init: str, fan_in: int) -> dict:
    check_choice("init", init, INITS)
    if init == "lecun":
        return {}
    # torch's kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)), a variance of 1/(3 fan_in).
    return {
        "kernel_init": nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
        "bias_init": _torch_bias_init(fan_in),
    }


class MLP(nnx.Module):
    """Fully connected ReLU network, ``in_features -> hidden... -> num_classes`` (784-100-10 by
    default).

    Example:
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: optjax.train.MLP(hidden=(100,), rngs=nnx.Rngs(0)))
        >>> [layer.kernel.shape for layer in model.layers]
        [(784, 100), (100, 10)]
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (100,),
        num_classes: int = 10,
        *,
        init: str = "lecun",
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *hidden, num_classes]
        for i, size in enumerate(sizes):
            check_positive_int(f"layer size {i}", size)
        self.sizes = tuple(sizes)
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, rngs=rngs, **_layer_inits(init, a))
                for a, b in itertools.pairwise(sizes)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class CNN(nnx.Module):
    """Two 3x3 convolutions with ReLU, each followed by 2x2 max pooling, a dense ReLU hidden
    layer, and a ``num_classes``-way readout. In training mode, dropout at rates
    ``dropout = (after the conv layers, after the dense layer)``; ``model.eval()`` turns it off.

    Example:
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: optjax.train.CNN(rngs=nnx.Rngs(0)))
        >>> model.conv2.kernel.shape, model.dense.kernel.shape   # 28 -> 14 -> 7 after pooling
        ((3, 3, 32, 64), (3136, 256))
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        num_classes: int = 10,
        image_size: int = 28,
        dropout: Sequence[float] = (0.25, 0.5),
        *,
        init: str = "lecun",
        rngs: nnx.Rngs,
    ):
        for name, pair in [("channels", channels), ("dropout", dropout)]:
            if len(pair) != 2:
                raise ValueError(f"{name} must hold 2 values, got {name}={pair!r}")
        if not all(0 <= rate < 1 for rate in dropout):
            raise ValueError(f"dropout rates must be in [0, 1), got dropout={dropout!r}")
        c1, c2 = channels
        for name, value in [
            ("in_channels", in_channels),
            ("channels[0]", c1),
            ("channels[1]", c2),
            ("hidden", hidden),
            ("num_classes", num_classes),
            ("image_size", image_size),
        ]:
            check_positive_int(name, value)
        self.conv1 = nnx.Conv(
            in_channels, c1, (3, 3), rngs=rngs, **_layer_inits(init, 9 * in_channels)
        )
        self.conv2 = nnx.Conv(c1, c2, (3, 3), rngs=rngs, **_layer_inits(init, 9 * c1))
        flat = (image_size // 4) ** 2 * c2
        self.dense = nnx.Linear(flat, hidden, rngs=rngs, **_layer_inits(init, flat))
        self.readout = nnx.Linear(hidden, num_classes, rngs=rngs, **_layer_inits(init, hidden))
        self.dropouts = nnx.List([nnx.Dropout(rate, rngs=rngs) for rate in dropout])

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 3:
            x = x[..., None]
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
        x = self.dropouts[0](x)
        x = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
        return self.readout(self.dropouts[1](x))


MODELS = {"mlp": MLP, "cnn": CNN}
