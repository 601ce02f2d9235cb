"""Transforms of transforms: masks and parameter groups, injected hyperparameters, gradient
accumulation, skipping non-finite steps, lookahead and parameter averaging."""

from optjax.wrappers.accumulation import ApplyIfFiniteState as ApplyIfFiniteState
from optjax.wrappers.accumulation import MultiSteps as MultiSteps
from optjax.wrappers.accumulation import MultiStepsState as MultiStepsState
from optjax.wrappers.accumulation import apply_if_finite as apply_if_finite
from optjax.wrappers.accumulation import skip_not_finite as skip_not_finite
from optjax.wrappers.averaging import AverageParamsState as AverageParamsState
from optjax.wrappers.averaging import LookaheadState as LookaheadState
from optjax.wrappers.averaging import average_params as average_params
from optjax.wrappers.averaging import lookahead as lookahead
from optjax.wrappers.hyperparams import Hyperparams as Hyperparams
from optjax.wrappers.hyperparams import InjectHyperparamsState as InjectHyperparamsState
from optjax.wrappers.hyperparams import inject_hyperparams as inject_hyperparams
from optjax.wrappers.masking import MaskedNode as MaskedNode
from optjax.wrappers.masking import MaskedState as MaskedState
from optjax.wrappers.masking import MultiTransformState as MultiTransformState
from optjax.wrappers.masking import freeze as freeze
from optjax.wrappers.masking import masked as masked
from optjax.wrappers.masking import multi_transform as multi_transform

__all__ = [
    "ApplyIfFiniteState",
    "AverageParamsState",
    "Hyperparams",
    "InjectHyperparamsState",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "apply_if_finite",
    "average_params",
    "freeze",
    "inject_hyperparams",
    "lookahead",
    "masked",
    "multi_transform",
    "skip_not_finite",
]
