"""The Flax (nnx) training harness: MNIST / Fashion-MNIST data, MLP and CNN models, a jitted
train step, and many runs (seeds, learning rates) trained at once under ``jax.vmap``.

Command line: ``python -m optjax.train --help``. Needs the ``[train]`` extra (flax); without it
the data names still import, and the others raise ModuleNotFoundError saying what to install.
"""

import importlib.util
from typing import TYPE_CHECKING

from optjax.train.data import DATASETS as DATASETS
from optjax.train.data import BatchSampler as BatchSampler
from optjax.train.data import ChecksumError as ChecksumError
from optjax.train.data import DataNotFoundError as DataNotFoundError
from optjax.train.data import Dataset as Dataset
from optjax.train.data import DatasetSpec as DatasetSpec
from optjax.train.data import IDXError as IDXError
from optjax.train.data import default_cache_dir as default_cache_dir
from optjax.train.data import download as download
from optjax.train.data import load_dataset as load_dataset
from optjax.train.data import read_idx as read_idx

__all__ = [
    "CNN",
    "DATASETS",
    "MLP",
    "BatchSampler",
    "ChecksumError",
    "DataNotFoundError",
    "Dataset",
    "DatasetSpec",
    "IDXError",
    "Progress",
    "RunConfig",
    "RunResult",
    "TrainResult",
    "TrainState",
    "cross_entropy",
    "default_cache_dir",
    "download",
    "eval_graphdef",
    "init_runs",
    "init_train_state",
    "load_dataset",
    "make_train_step",
    "read_idx",
    "split_model",
    "sweep",
    "train",
    "train_step",
]

if TYPE_CHECKING or importlib.util.find_spec("flax") is not None:
    from optjax.train.loop import RunConfig as RunConfig
    from optjax.train.loop import TrainState as TrainState
    from optjax.train.loop import cross_entropy as cross_entropy
    from optjax.train.loop import eval_graphdef as eval_graphdef
    from optjax.train.loop import init_runs as init_runs
    from optjax.train.loop import init_train_state as init_train_state
    from optjax.train.loop import make_train_step as make_train_step
    from optjax.train.loop import split_model as split_model
    from optjax.train.loop import sweep as sweep
    from optjax.train.loop import train as train
    from optjax.train.loop import train_step as train_step
    from optjax.train.models import CNN as CNN
    from optjax.train.models import MLP as MLP
    from optjax.train.results import Progress as Progress
    from optjax.train.results import RunResult as RunResult
    from optjax.train.results import TrainResult as TrainResult
else:  # without flax, `python -m optjax.train` can still say what to install (see __main__)

    def __getattr__(name: str):
        if name in __all__:
            raise ModuleNotFoundError(
                f"optjax.train.{name} needs flax, which is not installed: "
                "pip install 'optjax[train]'",
                name="flax",
            )
        raise AttributeError(f"module 'optjax.train' has no attribute {name!r}")
