"""The primitives, one module per family (adaptive, clipping, momentum, ...); and optax.transforms's
names: ``optjax.transforms.X`` is ``optjax.X`` for each name optax 0.2.8's ``optax.transforms``
has (its wrappers, clippings and constraints), looked up on first use (the package ``optjax``
imports these modules, so it cannot be imported by them).
"""

from typing import Any

OPTAX_NAMES = (
    "AddNoiseState",
    "ApplyIfFiniteState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "EmaState",
    "MaskedNode",
    "MaskedState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "NonNegativeParamsState",
    "PartitionState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "TraceState",
    "ZeroNansState",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "apply_if_finite",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "conditionally_mask",
    "conditionally_transform",
    "ema",
    "flatten",
    "freeze",
    "keep_params_nonnegative",
    "masked",
    "measure_with_ema",
    "monitor",
    "named_chain",
    "partition",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "selective_transform",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
    "trace",
    "unitwise_clip",
    "unitwise_norm",
    "zero_nans",
)

__all__ = list(OPTAX_NAMES)


def __getattr__(name: str) -> Any:
    if name in OPTAX_NAMES:
        import optjax

        return getattr(optjax, name)
    raise AttributeError(f"module 'optjax.transforms' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(OPTAX_NAMES))
