"""optjax: functional optimizer transforms for JAX.

Each optimizer is a pure ``(init, update)`` pair over pytrees, built by chaining small primitives.
The protocol and names are optax's; torch.optim's numerics are in ``optjax.torch_compat``.
"""

from optjax import _interrupt

_interrupt.quiet_interrupts_while_starting()  # before the imports below: see optjax._interrupt

from optjax import checkpoint as checkpoint
from optjax import contrib as contrib
from optjax import flat as flat
from optjax import microbatching as microbatching
from optjax import numerics as numerics
from optjax import schedules as schedules
from optjax import sharding as sharding
from optjax import torch_compat as torch_compat
from optjax import tree as tree
from optjax import tree_utils as tree_utils
from optjax import wrappers as wrappers
from optjax.base import EmptyState as EmptyState
from optjax.base import GradientTransformation as GradientTransformation
from optjax.base import MaskOrFn as MaskOrFn
from optjax.base import OptState as OptState
from optjax.base import Params as Params
from optjax.base import ScalarOrSchedule as ScalarOrSchedule
from optjax.base import Schedule as Schedule
from optjax.base import TransformInitFn as TransformInitFn
from optjax.base import TransformUpdateExtraArgsFn as TransformUpdateExtraArgsFn
from optjax.base import TransformUpdateFn as TransformUpdateFn
from optjax.base import Updates as Updates
from optjax.contrib import COCOBState as COCOBState
from optjax.contrib import DAdaptAdamWState as DAdaptAdamWState
from optjax.contrib import (
    DifferentiallyPrivateAggregateState as DifferentiallyPrivateAggregateState,
)
from optjax.contrib import DoGState as DoGState
from optjax.contrib import DoWGState as DoWGState
from optjax.contrib import GaLoreDimensionNumbers as GaLoreDimensionNumbers
from optjax.contrib import GaLoreState as GaLoreState
from optjax.contrib import HutchinsonState as HutchinsonState
from optjax.contrib import MadgradState as MadgradState
from optjax.contrib import MechanicState as MechanicState
from optjax.contrib import MomoAdamState as MomoAdamState
from optjax.contrib import MomoState as MomoState
from optjax.contrib import MuonDimensionNumbers as MuonDimensionNumbers
from optjax.contrib import MuonState as MuonState
from optjax.contrib import NormalizeState as NormalizeState
from optjax.contrib import ProdigyState as ProdigyState
from optjax.contrib import ReduceLROnPlateauState as ReduceLROnPlateauState
from optjax.contrib import SAMState as SAMState
from optjax.contrib import ScaleByAdemamixState as ScaleByAdemamixState
from optjax.contrib import ScaleByDistanceOverGradientsState as ScaleByDistanceOverGradientsState
from optjax.contrib import ScaleBySimplifiedAdEMAMixState as ScaleBySimplifiedAdEMAMixState
from optjax.contrib import ScheduleFreeState as ScheduleFreeState
from optjax.contrib import SophiaState as SophiaState
from optjax.contrib import SplitRealAndImaginaryArrays as SplitRealAndImaginaryArrays
from optjax.contrib import SplitRealAndImaginaryState as SplitRealAndImaginaryState
from optjax.contrib import acprop as acprop
from optjax.contrib import ademamix as ademamix
from optjax.contrib import adopt as adopt
from optjax.contrib import cocob as cocob
from optjax.contrib import dadapt_adamw as dadapt_adamw
from optjax.contrib import differentially_private_aggregate as differentially_private_aggregate
from optjax.contrib import dog as dog
from optjax.contrib import dowg as dowg
from optjax.contrib import dpsgd as dpsgd
from optjax.contrib import galore as galore
from optjax.contrib import hutchinson_estimator_diag_hessian as hutchinson_estimator_diag_hessian
from optjax.contrib import madgrad as madgrad
from optjax.contrib import mechanize as mechanize
from optjax.contrib import momo as momo
from optjax.contrib import momo_adam as momo_adam
from optjax.contrib import muon as muon
from optjax.contrib import normalize as normalize
from optjax.contrib import orthogonalize_via_newton_schulz as orthogonalize_via_newton_schulz
from optjax.contrib import prodigy as prodigy
from optjax.contrib import reduce_on_plateau as reduce_on_plateau
from optjax.contrib import sam as sam
from optjax.contrib import scale_by_acprop as scale_by_acprop
from optjax.contrib import scale_by_ademamix as scale_by_ademamix
from optjax.contrib import scale_by_adopt as scale_by_adopt
from optjax.contrib import scale_by_cocob as scale_by_cocob
from optjax.contrib import scale_by_distance_over_gradients as scale_by_distance_over_gradients
from optjax.contrib import scale_by_dog as scale_by_dog
from optjax.contrib import scale_by_dowg as scale_by_dowg
from optjax.contrib import scale_by_galore as scale_by_galore
from optjax.contrib import scale_by_madgrad as scale_by_madgrad
from optjax.contrib import scale_by_muon as scale_by_muon
from optjax.contrib import scale_by_shape as scale_by_shape
from optjax.contrib import scale_by_simplified_ademamix as scale_by_simplified_ademamix
from optjax.contrib import scale_by_sophia as scale_by_sophia
from optjax.contrib import schedule_free as schedule_free
from optjax.contrib import schedule_free_adamw as schedule_free_adamw
from optjax.contrib import schedule_free_eval_params as schedule_free_eval_params
from optjax.contrib import schedule_free_sgd as schedule_free_sgd
from optjax.contrib import simplified_ademamix as simplified_ademamix
from optjax.contrib import sophia as sophia
from optjax.contrib import split_real_and_imaginary as split_real_and_imaginary
from optjax.core import apply_updates as apply_updates
from optjax.core import chain as chain
from optjax.core import identity as identity
from optjax.core import named_chain as named_chain
from optjax.core import set_to_zero as set_to_zero
from optjax.core import stateless as stateless
from optjax.core import stateless_with_tree_map as stateless_with_tree_map
from optjax.flat import FlatBuffers as FlatBuffers
from optjax.flat import FlatLayout as FlatLayout
from optjax.flat import flat_transform as flat_transform
from optjax.numerics import global_norm as global_norm
from optjax.numerics import incremental_update as incremental_update
from optjax.numerics import init_empty_state as init_empty_state
from optjax.numerics import periodic_update as periodic_update
from optjax.numerics import safe_increment as safe_increment
from optjax.numerics import safe_int32_increment as safe_int32_increment
from optjax.numerics import safe_norm as safe_norm
from optjax.numerics import safe_root_mean_squares as safe_root_mean_squares
from optjax.numerics import tree_map_params as tree_map_params
from optjax.optimizers import adabelief as adabelief
from optjax.optimizers import adadelta as adadelta
from optjax.optimizers import adafactor as adafactor
from optjax.optimizers import adagrad as adagrad
from optjax.optimizers import adam as adam
from optjax.optimizers import adamax as adamax
from optjax.optimizers import adamaxw as adamaxw
from optjax.optimizers import adamw as adamw
from optjax.optimizers import adan as adan
from optjax.optimizers import amsgrad as amsgrad
from optjax.optimizers import fromage as fromage
from optjax.optimizers import lamb as lamb
from optjax.optimizers import lars as lars
from optjax.optimizers import lbfgs as lbfgs
from optjax.optimizers import lion as lion
from optjax.optimizers import nadam as nadam
from optjax.optimizers import nadamw as nadamw
from optjax.optimizers import noisy_sgd as noisy_sgd
from optjax.optimizers import novograd as novograd
from optjax.optimizers import optimistic_adam as optimistic_adam
from optjax.optimizers import optimistic_adam_v2 as optimistic_adam_v2
from optjax.optimizers import optimistic_gradient_descent as optimistic_gradient_descent
from optjax.optimizers import polyak_sgd as polyak_sgd
from optjax.optimizers import radam as radam
from optjax.optimizers import rmsprop as rmsprop
from optjax.optimizers import rprop as rprop
from optjax.optimizers import sgd as sgd
from optjax.optimizers import sign_sgd as sign_sgd
from optjax.optimizers import signum as signum
from optjax.optimizers import sm3 as sm3
from optjax.optimizers import yogi as yogi
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
from optjax.transforms.adaptive_variants import ScaleByAdanState as ScaleByAdanState
from optjax.transforms.adaptive_variants import ScaleByBeliefState as ScaleByBeliefState
from optjax.transforms.adaptive_variants import ScaleByNovogradState as ScaleByNovogradState
from optjax.transforms.adaptive_variants import ScaleBySM3State as ScaleBySM3State
from optjax.transforms.adaptive_variants import scale_by_adan as scale_by_adan
from optjax.transforms.adaptive_variants import scale_by_belief as scale_by_belief
from optjax.transforms.adaptive_variants import scale_by_novograd as scale_by_novograd
from optjax.transforms.adaptive_variants import scale_by_sm3 as scale_by_sm3
from optjax.transforms.adaptive_variants import scale_by_yogi as scale_by_yogi
from optjax.transforms.clipping import AdaptiveGradClipState as AdaptiveGradClipState
from optjax.transforms.clipping import ClipByGlobalNormState as ClipByGlobalNormState
from optjax.transforms.clipping import ClipState as ClipState
from optjax.transforms.clipping import adaptive_grad_clip as adaptive_grad_clip
from optjax.transforms.clipping import clip as clip
from optjax.transforms.clipping import clip_by_block_rms as clip_by_block_rms
from optjax.transforms.clipping import clip_by_global_norm as clip_by_global_norm
from optjax.transforms.clipping import per_example_global_norm_clip as per_example_global_norm_clip
from optjax.transforms.clipping import per_example_layer_norm_clip as per_example_layer_norm_clip
from optjax.transforms.clipping import unitwise_clip as unitwise_clip
from optjax.transforms.clipping import unitwise_norm as unitwise_norm
from optjax.transforms.factored import FactoredState as FactoredState
from optjax.transforms.factored import scale_by_factored_rms as scale_by_factored_rms
from optjax.transforms.factored import scale_by_param_block_rms as scale_by_param_block_rms
from optjax.transforms.gradient_ops import NonNegativeParamsState as NonNegativeParamsState
from optjax.transforms.gradient_ops import ZeroNansState as ZeroNansState
from optjax.transforms.gradient_ops import centralize as centralize
from optjax.transforms.gradient_ops import keep_params_nonnegative as keep_params_nonnegative
from optjax.transforms.gradient_ops import normalize_by_update_norm as normalize_by_update_norm
from optjax.transforms.gradient_ops import scale_gradient as scale_gradient
from optjax.transforms.gradient_ops import zero_nans as zero_nans
from optjax.transforms.layerwise import ScaleByTrustRatioState as ScaleByTrustRatioState
from optjax.transforms.layerwise import scale_by_lars as scale_by_lars
from optjax.transforms.layerwise import scale_by_param_block_norm as scale_by_param_block_norm
from optjax.transforms.layerwise import scale_by_trust_ratio as scale_by_trust_ratio
from optjax.transforms.lbfgs import ScaleByLBFGSState as ScaleByLBFGSState
from optjax.transforms.lbfgs import scale_by_lbfgs as scale_by_lbfgs
from optjax.transforms.linesearch import BacktrackingLinesearchInfo as BacktrackingLinesearchInfo
from optjax.transforms.linesearch import (
    ScaleByBacktrackingLinesearchState as ScaleByBacktrackingLinesearchState,
)
from optjax.transforms.linesearch import ScaleByZoomLinesearchState as ScaleByZoomLinesearchState
from optjax.transforms.linesearch import ZoomLinesearchInfo as ZoomLinesearchInfo
from optjax.transforms.linesearch import (
    scale_by_backtracking_linesearch as scale_by_backtracking_linesearch,
)
from optjax.transforms.linesearch import scale_by_zoom_linesearch as scale_by_zoom_linesearch
from optjax.transforms.linesearch import value_and_grad_from_state as value_and_grad_from_state
from optjax.transforms.momentum import EmaState as EmaState
from optjax.transforms.momentum import TraceState as TraceState
from optjax.transforms.momentum import ema as ema
from optjax.transforms.momentum import trace as trace
from optjax.transforms.noise import AddNoiseState as AddNoiseState
from optjax.transforms.noise import add_noise as add_noise
from optjax.transforms.optimistic import (
    ScaleByOptimisticGradientState as ScaleByOptimisticGradientState,
)
from optjax.transforms.optimistic import (
    scale_by_optimistic_gradient as scale_by_optimistic_gradient,
)
from optjax.transforms.optimistic import scale_by_polyak as scale_by_polyak
from optjax.transforms.regularization import AddDecayedWeightsState as AddDecayedWeightsState
from optjax.transforms.regularization import add_decayed_weights as add_decayed_weights
from optjax.transforms.scaling import ScaleByScheduleState as ScaleByScheduleState
from optjax.transforms.scaling import ScaleState as ScaleState
from optjax.transforms.scaling import scale as scale
from optjax.transforms.scaling import scale_by_learning_rate as scale_by_learning_rate
from optjax.transforms.scaling import scale_by_schedule as scale_by_schedule
from optjax.transforms.sign import ScaleByRpropState as ScaleByRpropState
from optjax.transforms.sign import scale_by_rprop as scale_by_rprop
from optjax.transforms.sign import scale_by_sign as scale_by_sign
from optjax.transforms.torch_forms import ScaleByNadamState as ScaleByNadamState
from optjax.transforms.torch_forms import scale_by_factored_rms_torch as scale_by_factored_rms_torch
from optjax.transforms.torch_forms import scale_by_nadam as scale_by_nadam
from optjax.tree import bias_correction as bias_correction
from optjax.tree import update_infinity_moment as update_infinity_moment
from optjax.tree import update_moment as update_moment
from optjax.tree import update_moment_per_elem_norm as update_moment_per_elem_norm
from optjax.wrappers import ApplyEvery as ApplyEvery
from optjax.wrappers import ApplyIfFiniteState as ApplyIfFiniteState
from optjax.wrappers import AverageParamsState as AverageParamsState
from optjax.wrappers import ConditionallyMaskState as ConditionallyMaskState
from optjax.wrappers import ConditionallyTransformState as ConditionallyTransformState
from optjax.wrappers import ConditionFn as ConditionFn
from optjax.wrappers import GradientTransformationExtraArgs as GradientTransformationExtraArgs
from optjax.wrappers import Hyperparams as Hyperparams
from optjax.wrappers import InjectHyperparamsState as InjectHyperparamsState
from optjax.wrappers import InjectStatefulHyperparamsState as InjectStatefulHyperparamsState
from optjax.wrappers import LookaheadState as LookaheadState
from optjax.wrappers import MaskedNode as MaskedNode
from optjax.wrappers import MaskedState as MaskedState
from optjax.wrappers import MonitorState as MonitorState
from optjax.wrappers import MultiSteps as MultiSteps
from optjax.wrappers import MultiStepsState as MultiStepsState
from optjax.wrappers import MultiTransformState as MultiTransformState
from optjax.wrappers import PartitionState as PartitionState
from optjax.wrappers import ShouldSkipUpdateFunction as ShouldSkipUpdateFunction
from optjax.wrappers import SnapshotState as SnapshotState
from optjax.wrappers import WrappedSchedule as WrappedSchedule
from optjax.wrappers import apply_every as apply_every
from optjax.wrappers import apply_if_finite as apply_if_finite
from optjax.wrappers import average_params as average_params
from optjax.wrappers import conditionally_mask as conditionally_mask
from optjax.wrappers import conditionally_transform as conditionally_transform
from optjax.wrappers import flatten as flatten
from optjax.wrappers import freeze as freeze
from optjax.wrappers import inject_hyperparams as inject_hyperparams
from optjax.wrappers import inject_stateful_hyperparams as inject_stateful_hyperparams
from optjax.wrappers import lookahead as lookahead
from optjax.wrappers import masked as masked
from optjax.wrappers import measure_with_ema as measure_with_ema
from optjax.wrappers import microbatch as microbatch
from optjax.wrappers import monitor as monitor
from optjax.wrappers import multi_transform as multi_transform
from optjax.wrappers import partition as partition
from optjax.wrappers import selective_transform as selective_transform
from optjax.wrappers import skip_large_updates as skip_large_updates
from optjax.wrappers import skip_not_finite as skip_not_finite
from optjax.wrappers import snapshot as snapshot
from optjax.wrappers import with_extra_args_support as with_extra_args_support

__version__ = "0.1.0"

__all__ = [
    "AdaptiveGradClipState",
    "AddDecayedWeightsState",
    "AddNoiseState",
    "ApplyEvery",
    "ApplyIfFiniteState",
    "AverageParamsState",
    "BacktrackingLinesearchInfo",
    "COCOBState",
    "ClipByGlobalNormState",
    "ClipState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "FlatBuffers",
    "FlatLayout",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "HutchinsonState",
    "Hyperparams",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "LookaheadState",
    "MadgradState",
    "MaskOrFn",
    "MaskedNode",
    "MaskedState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "MuonDimensionNumbers",
    "MuonState",
    "NonNegativeParamsState",
    "NormalizeState",
    "OptState",
    "Params",
    "PartitionState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScalarOrSchedule",
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAdanState",
    "ScaleByAdemamixState",
    "ScaleByAmsgradState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByBeliefState",
    "ScaleByDistanceOverGradientsState",
    "ScaleByLBFGSState",
    "ScaleByLionState",
    "ScaleByNadamState",
    "ScaleByNovogradState",
    "ScaleByOptimisticGradientState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleBySM3State",
    "ScaleByScheduleState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScaleByTrustRatioState",
    "ScaleByZoomLinesearchState",
    "ScaleState",
    "Schedule",
    "ScheduleFreeState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "SophiaState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "TraceState",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
    "WrappedSchedule",
    "ZeroNansState",
    "ZoomLinesearchInfo",
    "__version__",
    "acprop",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "ademamix",
    "adopt",
    "amsgrad",
    "apply_every",
    "apply_if_finite",
    "apply_updates",
    "average_params",
    "bias_correction",
    "centralize",
    "chain",
    "checkpoint",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "cocob",
    "conditionally_mask",
    "conditionally_transform",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_decay_with_warm_restarts",
    "cosine_onecycle_schedule",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "ema",
    "exponential_decay",
    "flat",
    "flat_transform",
    "flatten",
    "freeze",
    "fromage",
    "galore",
    "global_norm",
    "hutchinson_estimator_diag_hessian",
    "identity",
    "incremental_update",
    "init_empty_state",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "join_schedules",
    "keep_params_nonnegative",
    "lamb",
    "lars",
    "lbfgs",
    "linear_onecycle_schedule",
    "linear_schedule",
    "lion",
    "lookahead",
    "madgrad",
    "masked",
    "measure_with_ema",
    "mechanize",
    "microbatch",
    "momo",
    "momo_adam",
    "monitor",
    "multi_transform",
    "muon",
    "nadam",
    "nadamw",
    "named_chain",
    "noisy_sgd",
    "normalize",
    "normalize_by_update_norm",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "orthogonalize_via_newton_schulz",
    "partition",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "periodic_update",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polyak_sgd",
    "polynomial_schedule",
    "prodigy",
    "radam",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "sam",
    "scale",
    "scale_by_acprop",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_amsgrad",
    "scale_by_backtracking_linesearch",
    "scale_by_belief",
    "scale_by_cocob",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_factored_rms",
    "scale_by_factored_rms_torch",
    "scale_by_galore",
    "scale_by_lars",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_polyak",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_shape",
    "scale_by_sign",
    "scale_by_simplified_ademamix",
    "scale_by_sm3",
    "scale_by_sophia",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "scale_by_zoom_linesearch",
    "scale_gradient",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "schedules",
    "selective_transform",
    "set_to_zero",
    "sgd",
    "sgdr_schedule",
    "sharding",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "skip_large_updates",
    "skip_not_finite",
    "sm3",
    "snapshot",
    "sophia",
    "split_real_and_imaginary",
    "stateless",
    "stateless_with_tree_map",
    "torch_compat",
    "trace",
    "tree",
    "tree_map_params",
    "unitwise_clip",
    "unitwise_norm",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "value_and_grad_from_state",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "with_extra_args_support",
    "wrappers",
    "yogi",
    "zero_nans",
]
