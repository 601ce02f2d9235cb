"""optjax: functional optimizer transforms for JAX.

Each optimizer is a pure ``(init, update)`` pair over pytrees, built by chaining small primitives.
The protocol and names are optax's; torch.optim's numerics are in ``optjax.torch_compat``.
"""

from optjax import tree as tree
from optjax.core import EmptyState as EmptyState
from optjax.core import GradientTransformation as GradientTransformation
from optjax.core import OptState as OptState
from optjax.core import Params as Params
from optjax.core import Schedule as Schedule
from optjax.core import ScalarOrSchedule as ScalarOrSchedule
from optjax.core import Updates as Updates
from optjax.core import apply_updates as apply_updates
from optjax.core import chain as chain
from optjax.core import identity as identity
from optjax.core import named_chain as named_chain
from optjax.core import set_to_zero as set_to_zero
from optjax.core import stateless as stateless
from optjax.optimizers import adadelta as adadelta
from optjax.optimizers import adafactor as adafactor
from optjax.optimizers import adagrad as adagrad
from optjax.optimizers import adam as adam
from optjax.optimizers import adamax as adamax
from optjax.optimizers import adamaxw as adamaxw
from optjax.optimizers import adamw as adamw
from optjax.optimizers import amsgrad as amsgrad
from optjax.optimizers import lion as lion
from optjax.optimizers import nadam as nadam
from optjax.optimizers import nadamw as nadamw
from optjax.optimizers import radam as radam
from optjax.optimizers import rmsprop as rmsprop
from optjax.optimizers import sgd as sgd
from optjax.transforms.adaptive import ScaleByAdaDeltaState as ScaleByAdaDeltaState
from optjax.transforms.adaptive import ScaleByAdamState as ScaleByAdamState
from optjax.transforms.adaptive import ScaleByAmsgradState as ScaleByAmsgradState
from optjax.transforms.adaptive import ScaleByLionState as ScaleByLionState
from optjax.transforms.adaptive import ScaleByRmsState as ScaleByRmsState
from optjax.transforms.adaptive import ScaleByRssState as ScaleByRssState
from optjax.transforms.adaptive import ScaleByRStdDevState as ScaleByRStdDevState
from optjax.transforms.adaptive import scale_by_adadelta as scale_by_adadelta
from optjax.transforms.adaptive import scale_by_adam as scale_by_adam
from optjax.transforms.adaptive import scale_by_adamax as scale_by_adamax
from optjax.transforms.adaptive import scale_by_amsgrad as scale_by_amsgrad
from optjax.transforms.adaptive import scale_by_lion as scale_by_lion
from optjax.transforms.adaptive import scale_by_radam as scale_by_radam
from optjax.transforms.adaptive import scale_by_rms as scale_by_rms
from optjax.transforms.adaptive import scale_by_rss as scale_by_rss
from optjax.transforms.adaptive import scale_by_stddev as scale_by_stddev
from optjax.transforms.clipping import clip as clip
from optjax.transforms.clipping import clip_by_block_rms as clip_by_block_rms
from optjax.transforms.clipping import clip_by_global_norm as clip_by_global_norm
from optjax.transforms.factored import FactoredState as FactoredState
from optjax.transforms.factored import scale_by_factored_rms as scale_by_factored_rms
from optjax.transforms.factored import scale_by_param_block_rms as scale_by_param_block_rms
from optjax.transforms.momentum import EmaState as EmaState
from optjax.transforms.momentum import TraceState as TraceState
from optjax.transforms.momentum import ema as ema
from optjax.transforms.momentum import trace as trace
from optjax.transforms.noise import AddNoiseState as AddNoiseState
from optjax.transforms.noise import add_noise as add_noise
from optjax.transforms.regularization import add_decayed_weights as add_decayed_weights
from optjax.transforms.scaling import ScaleByScheduleState as ScaleByScheduleState
from optjax.transforms.scaling import scale as scale
from optjax.transforms.scaling import scale_by_learning_rate as scale_by_learning_rate
from optjax.transforms.scaling import scale_by_schedule as scale_by_schedule
from optjax.transforms.torch_forms import ScaleByNadamState as ScaleByNadamState
from optjax.transforms.torch_forms import scale_by_factored_rms_torch as scale_by_factored_rms_torch
from optjax.transforms.torch_forms import scale_by_nadam as scale_by_nadam
from optjax import torch_compat as torch_compat

__version__ = "0.1.0"
