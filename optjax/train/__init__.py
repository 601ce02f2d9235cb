"""The Flax (nnx) training harness: MNIST / Fashion-MNIST data, MLP and CNN models, a jitted
train step, and many runs (seeds, learning rates) trained at once under ``jax.vmap``.

Command line: ``python -m optjax.train --help``.
"""

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
