"""optax.contrib's optimizers, by the same names: ``optax.contrib.muon`` is
``optjax.contrib.muon``, and ``optjax.muon`` too (one definition, reachable both ways).

Muon; schedule-free SGD and AdamW; ADOPT; AdEMAMix and its simplified form; the learning-rate
free methods (Prodigy, D-Adaptation AdamW, DoG, DoWG, COCOB) and Mechanic; MADGRAD; ACProp;
MoMo; SAM; Sophia and Hutchinson's estimator; differentially private SGD; reduce_on_plateau;
GaLore; split_real_and_imaginary. Each family is a private module of this package.
"""

from optjax.contrib._acprop import acprop as acprop
from optjax.contrib._acprop import scale_by_acprop as scale_by_acprop
from optjax.contrib._ademamix import ScaleByAdemamixState as ScaleByAdemamixState
from optjax.contrib._ademamix import (
    ScaleBySimplifiedAdEMAMixState as ScaleBySimplifiedAdEMAMixState,
)
from optjax.contrib._ademamix import ademamix as ademamix
from optjax.contrib._ademamix import scale_by_ademamix as scale_by_ademamix
from optjax.contrib._ademamix import scale_by_simplified_ademamix as scale_by_simplified_ademamix
from optjax.contrib._ademamix import simplified_ademamix as simplified_ademamix
from optjax.contrib._adopt import adopt as adopt
from optjax.contrib._adopt import scale_by_adopt as scale_by_adopt
from optjax.contrib._complex_valued import (
    SplitRealAndImaginaryArrays as SplitRealAndImaginaryArrays,
)
from optjax.contrib._complex_valued import SplitRealAndImaginaryState as SplitRealAndImaginaryState
from optjax.contrib._complex_valued import split_real_and_imaginary as split_real_and_imaginary
from optjax.contrib._galore import GaLoreDimensionNumbers as GaLoreDimensionNumbers
from optjax.contrib._galore import GaLoreState as GaLoreState
from optjax.contrib._galore import galore as galore
from optjax.contrib._galore import scale_by_galore as scale_by_galore
from optjax.contrib._madgrad import MadgradState as MadgradState
from optjax.contrib._madgrad import madgrad as madgrad
from optjax.contrib._madgrad import scale_by_madgrad as scale_by_madgrad
from optjax.contrib._mechanic import MechanicState as MechanicState
from optjax.contrib._mechanic import mechanize as mechanize
from optjax.contrib._momo import MomoAdamState as MomoAdamState
from optjax.contrib._momo import MomoState as MomoState
from optjax.contrib._momo import momo as momo
from optjax.contrib._momo import momo_adam as momo_adam
from optjax.contrib._muon import MuonDimensionNumbers as MuonDimensionNumbers
from optjax.contrib._muon import MuonState as MuonState
from optjax.contrib._muon import muon as muon
from optjax.contrib._muon import orthogonalize_via_newton_schulz as orthogonalize_via_newton_schulz
from optjax.contrib._muon import scale_by_muon as scale_by_muon
from optjax.contrib._muon import scale_by_shape as scale_by_shape
from optjax.contrib._parameter_free import COCOBState as COCOBState
from optjax.contrib._parameter_free import DAdaptAdamWState as DAdaptAdamWState
from optjax.contrib._parameter_free import DoGState as DoGState
from optjax.contrib._parameter_free import DoWGState as DoWGState
from optjax.contrib._parameter_free import ProdigyState as ProdigyState
from optjax.contrib._parameter_free import (
    ScaleByDistanceOverGradientsState as ScaleByDistanceOverGradientsState,
)
from optjax.contrib._parameter_free import cocob as cocob
from optjax.contrib._parameter_free import dadapt_adamw as dadapt_adamw
from optjax.contrib._parameter_free import dog as dog
from optjax.contrib._parameter_free import dowg as dowg
from optjax.contrib._parameter_free import prodigy as prodigy
from optjax.contrib._parameter_free import scale_by_cocob as scale_by_cocob
from optjax.contrib._parameter_free import (
    scale_by_distance_over_gradients as scale_by_distance_over_gradients,
)
from optjax.contrib._parameter_free import scale_by_dog as scale_by_dog
from optjax.contrib._parameter_free import scale_by_dowg as scale_by_dowg
from optjax.contrib._plateau import ReduceLROnPlateauState as ReduceLROnPlateauState
from optjax.contrib._plateau import reduce_on_plateau as reduce_on_plateau
from optjax.contrib._privacy import (
    DifferentiallyPrivateAggregateState as DifferentiallyPrivateAggregateState,
)
from optjax.contrib._privacy import (
    differentially_private_aggregate as differentially_private_aggregate,
)
from optjax.contrib._privacy import dpsgd as dpsgd
from optjax.contrib._sam import NormalizeState as NormalizeState
from optjax.contrib._sam import SAMState as SAMState
from optjax.contrib._sam import normalize as normalize
from optjax.contrib._sam import sam as sam
from optjax.contrib._schedule_free import ScheduleFreeState as ScheduleFreeState
from optjax.contrib._schedule_free import schedule_free as schedule_free
from optjax.contrib._schedule_free import schedule_free_adamw as schedule_free_adamw
from optjax.contrib._schedule_free import schedule_free_eval_params as schedule_free_eval_params
from optjax.contrib._schedule_free import schedule_free_sgd as schedule_free_sgd
from optjax.contrib._sophia import HutchinsonState as HutchinsonState
from optjax.contrib._sophia import SophiaState as SophiaState
from optjax.contrib._sophia import (
    hutchinson_estimator_diag_hessian as hutchinson_estimator_diag_hessian,
)
from optjax.contrib._sophia import scale_by_sophia as scale_by_sophia
from optjax.contrib._sophia import sophia as sophia

__all__ = [
    "COCOBState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "MadgradState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MuonDimensionNumbers",
    "MuonState",
    "NormalizeState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleByDistanceOverGradientsState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "SophiaState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "galore",
    "hutchinson_estimator_diag_hessian",
    "madgrad",
    "mechanize",
    "momo",
    "momo_adam",
    "muon",
    "normalize",
    "orthogonalize_via_newton_schulz",
    "prodigy",
    "reduce_on_plateau",
    "sam",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_galore",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_shape",
    "scale_by_simplified_ademamix",
    "scale_by_sophia",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "simplified_ademamix",
    "sophia",
    "split_real_and_imaginary",
]
