"""Transforms of transforms: masks and parameter groups, injected hyperparameters, gradient
accumulation, conditional steps, skipping non-finite steps, lookahead and parameter averaging,
monitoring, flattening, and microbatched evaluation."""

from optjax.wrappers.accumulation import ApplyIfFiniteState as ApplyIfFiniteState
from optjax.wrappers.accumulation import MultiSteps as MultiSteps
from optjax.wrappers.accumulation import MultiStepsState as MultiStepsState
from optjax.wrappers.accumulation import ShouldSkipUpdateFunction as ShouldSkipUpdateFunction
from optjax.wrappers.accumulation import apply_if_finite as apply_if_finite
from optjax.wrappers.accumulation import skip_not_finite as skip_not_finite
from optjax.wrappers.averaging import AverageParamsState as AverageParamsState
from optjax.wrappers.averaging import LookaheadState as LookaheadState
from optjax.wrappers.averaging import average_params as average_params
from optjax.wrappers.averaging import lookahead as lookahead
from optjax.wrappers.conditional import ApplyEvery as ApplyEvery
from optjax.wrappers.conditional import ConditionallyMaskState as ConditionallyMaskState
from optjax.wrappers.conditional import ConditionallyTransformState as ConditionallyTransformState
from optjax.wrappers.conditional import ConditionFn as ConditionFn
from optjax.wrappers.conditional import apply_every as apply_every
from optjax.wrappers.conditional import conditionally_mask as conditionally_mask
from optjax.wrappers.conditional import conditionally_transform as conditionally_transform
from optjax.wrappers.conditional import skip_large_updates as skip_large_updates
from optjax.wrappers.extra_args import (
    GradientTransformationExtraArgs as GradientTransformationExtraArgs,
)
from optjax.wrappers.extra_args import with_extra_args_support as with_extra_args_support
from optjax.wrappers.flattening import flatten as flatten
from optjax.wrappers.freezing import selective_transform as selective_transform
from optjax.wrappers.hyperparams import Hyperparams as Hyperparams
from optjax.wrappers.hyperparams import InjectHyperparamsState as InjectHyperparamsState
from optjax.wrappers.hyperparams import inject_hyperparams as inject_hyperparams
from optjax.wrappers.masking import MaskedNode as MaskedNode
from optjax.wrappers.masking import MaskedState as MaskedState
from optjax.wrappers.masking import MultiTransformState as MultiTransformState
from optjax.wrappers.masking import PartitionState as PartitionState
from optjax.wrappers.masking import freeze as freeze
from optjax.wrappers.masking import masked as masked
from optjax.wrappers.masking import multi_transform as multi_transform
from optjax.wrappers.masking import partition as partition
from optjax.wrappers.microbatching import AccumulationType as AccumulationType
from optjax.wrappers.microbatching import Accumulator as Accumulator
from optjax.wrappers.microbatching import microbatch as microbatch
from optjax.wrappers.monitoring import MonitorState as MonitorState
from optjax.wrappers.monitoring import SnapshotState as SnapshotState
from optjax.wrappers.monitoring import measure_with_ema as measure_with_ema
from optjax.wrappers.monitoring import monitor as monitor
from optjax.wrappers.monitoring import snapshot as snapshot
from optjax.wrappers.stateful_hyperparams import (
    InjectStatefulHyperparamsState as InjectStatefulHyperparamsState,
)
from optjax.wrappers.stateful_hyperparams import StatefulSchedule as StatefulSchedule
from optjax.wrappers.stateful_hyperparams import WrappedSchedule as WrappedSchedule
from optjax.wrappers.stateful_hyperparams import WrappedScheduleState as WrappedScheduleState
from optjax.wrappers.stateful_hyperparams import (
    inject_stateful_hyperparams as inject_stateful_hyperparams,
)

__all__ = [
    "AccumulationType",
    "Accumulator",
    "ApplyEvery",
    "ApplyIfFiniteState",
    "AverageParamsState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "GradientTransformationExtraArgs",
    "Hyperparams",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "PartitionState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "StatefulSchedule",
    "WrappedSchedule",
    "WrappedScheduleState",
    "apply_every",
    "apply_if_finite",
    "average_params",
    "conditionally_mask",
    "conditionally_transform",
    "flatten",
    "freeze",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "lookahead",
    "masked",
    "measure_with_ema",
    "microbatch",
    "monitor",
    "multi_transform",
    "partition",
    "selective_transform",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
    "with_extra_args_support",
]
