"""optjax: functional optimizer transforms for JAX.

Each optimizer is a pure ``(init, update)`` pair over pytrees, built by chaining small primitives.
The protocol and names are optax's; torch.optim's numerics are in ``optjax.torch_compat``.
"""

from optjax import checkpoint as checkpoint
from optjax import flat as flat
from optjax import schedules as schedules
from optjax import sharding as sharding
from optjax import torch_compat as torch_compat
from optjax import tree as tree
from optjax import wrappers as wrappers
from optjax.base import EmptyState as EmptyState
from optjax.base import GradientTransformation as GradientTransformation
from optjax.base import OptState as OptState
from optjax.base import Params as Params
from optjax.base import ScalarOrSchedule as ScalarOrSchedule
from optjax.base import Schedule as Schedule
from optjax.base import Updates as Updates
from optjax.core import apply_updates as apply_updates
from optjax.core import chain as chain
from optjax.core import identity as identity
from optjax.core import named_chain as named_chain
from optjax.core import set_to_zero as set_to_zero
from optjax.core import stateless as stateless
from optjax.flat import FlatBuffers as FlatBuffers
from optjax.flat import FlatLayout as FlatLayout
from optjax.flat import flat_transform as flat_transform
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
from optjax.schedules import constant_schedule as constant_schedule
from optjax.schedules import cosine_decay_schedule as cosine_decay_schedule
from optjax.schedules import cosine_decay_with_warm_restarts as cosine_decay_with_warm_restarts
from optjax.schedules import cosine_onecycle_schedule as cosine_onecycle_schedule
from optjax.schedules import exponential_decay as exponential_decay
from optjax.schedules import join_schedules as join_schedules
from optjax.schedules import linear_onecycle_schedule as linear_onecycle_schedule
from optjax.schedules import linear_schedule as linear_schedule
from optjax.schedules import piecewise_constant_schedule as piecewise_constant_schedule
from optjax.schedules import piecewise_interpolate_schedule as piecewise_interpolate_schedule
from optjax.schedules import polynomial_schedule as polynomial_schedule
from optjax.schedules import sgdr_schedule as sgdr_schedule
from optjax.schedules import warmup_constant_schedule as warmup_constant_schedule
from optjax.schedules import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from optjax.schedules import warmup_exponential_decay_schedule as warmup_exponential_decay_schedule
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
from optjax.wrappers import ApplyIfFiniteState as ApplyIfFiniteState
from optjax.wrappers import AverageParamsState as AverageParamsState
from optjax.wrappers import Hyperparams as Hyperparams
from optjax.wrappers import InjectHyperparamsState as InjectHyperparamsState
from optjax.wrappers import LookaheadState as LookaheadState
from optjax.wrappers import MaskedNode as MaskedNode
from optjax.wrappers import MaskedState as MaskedState
from optjax.wrappers import MultiSteps as MultiSteps
from optjax.wrappers import MultiStepsState as MultiStepsState
from optjax.wrappers import MultiTransformState as MultiTransformState
from optjax.wrappers import apply_if_finite as apply_if_finite
from optjax.wrappers import average_params as average_params
from optjax.wrappers import freeze as freeze
from optjax.wrappers import inject_hyperparams as inject_hyperparams
from optjax.wrappers import lookahead as lookahead
from optjax.wrappers import masked as masked
from optjax.wrappers import multi_transform as multi_transform
from optjax.wrappers import skip_not_finite as skip_not_finite

__version__ = "0.1.0"

__all__ = [
    "AddNoiseState",
    "ApplyIfFiniteState",
    "AverageParamsState",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "FlatBuffers",
    "FlatLayout",
    "GradientTransformation",
    "Hyperparams",
    "InjectHyperparamsState",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByNadamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "Schedule",
    "TraceState",
    "Updates",
    "__version__",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "add_decayed_weights",
    "add_noise",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "average_params",
    "chain",
    "checkpoint",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_decay_with_warm_restarts",
    "cosine_onecycle_schedule",
    "ema",
    "exponential_decay",
    "flat",
    "flat_transform",
    "freeze",
    "identity",
    "inject_hyperparams",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "lion",
    "lookahead",
    "masked",
    "multi_transform",
    "nadam",
    "nadamw",
    "named_chain",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "radam",
    "rmsprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_factored_rms",
    "scale_by_factored_rms_torch",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_nadam",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "schedules",
    "set_to_zero",
    "sgd",
    "sgdr_schedule",
    "sharding",
    "skip_not_finite",
    "stateless",
    "torch_compat",
    "trace",
    "tree",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "wrappers",
]
