"""Pytree functions: optax.tree's, with optax's names, arguments and meanings, and the helpers
optjax's transforms share (moments, bias correction, norms, casting).

optax.tree's functions (``add``, ``sub``, ``mul``, ``div``, ``scale``, ``add_scale``, ``where``,
``clip``, ``sum``, ``vdot``, ``norm``, ``max``, ``min``, ``size``, ``get``, ``set``,
``map_params``, ``update_moment``, ``bias_correction``, ...) run as ``optax.tree``'s do, so code
written with ``optax.tree.X`` runs with ``optjax.tree.X``. Where optjax differs from optax 0.2.8,
it is deliberate (each function notes its difference):

- Trees must match. A mismatch in structure raises a ValueError naming the first differing path;
  leaves whose shapes do not broadcast, a ValueError naming the leaf. A None leaf marks a leaf left
  out: a None in any argument gives None in the result.
- Python numbers are accepted as leaves everywhere.
- Elementwise arithmetic (``add``, ``sub``, ``mul``, ``div``, ``add_scale``, ``scale``,
  ``where``, ``clip``) gives the dtype JAX's standard promotion gives (a Python number is weakly
  typed: it never widens an array), whatever promotion mode is in force. A formula of several
  terms is formed in float32 at least and rounded once.
- Moment updates (``update_moment``, ``update_moment_per_elem_norm``, ``update_infinity_moment``,
  ``bias_correction``) compute in float32 at least and keep the moments' dtype: state dtype stays
  what it was.
- Reductions (``sum``, ``vdot``, ``norm``) accumulate and return in float32 at least (the widest
  float of the leaves; ``sum`` and ``vdot`` of integer leaves stay integers), so a bf16 or fp16
  tree's norm neither rounds to 8 bits nor overflows at 256. ``max`` and ``min`` are exact, in the
  leaves' promoted dtype. They, and ``size``, accept optjax.flat.FlatBuffers (padding left out).

The transforms' helpers (``ema``, ``accumulate``, ``debias``, ``scaled``, ``wide_zeros_like``,
``global_norm``, ``leaf_sum``, ``get_by_name``, ...) round each result once to the dtype of the
tree it is stored in, with decays, bias corrections and learning rates applied in float32 at
least, so a bf16 parameter never turns a hyperparameter like b2 = 0.999 into 1.0. Those that
reduce or broadcast per leaf (``leaf_sum``, ``leaf_mean``, ``map_with_leaf_values``,
``where_leaves``) and over the whole tree (``sum_of_squares``, ``global_norm``) accept a pytree or
optjax.flat.FlatBuffers alike, so a transform written with them is correct on the flat layout
without a branch of its own. Their per-leaf values are a tree of scalars shaped like the input for
a tree, and one array per dtype group for FlatBuffers: compute with them through
``jax.tree.map``, which treats both alike.
"""

from optjax._tree_math import add as add
from optjax._tree_math import add_scale as add_scale
from optjax._tree_math import batch_shape as batch_shape
from optjax._tree_math import bias_correction as bias_correction
from optjax._tree_math import cast as cast
from optjax._tree_math import cast_like as cast_like
from optjax._tree_math import clip as clip
from optjax._tree_math import conj as conj
from optjax._tree_math import div as div
from optjax._tree_math import dtype as dtype
from optjax._tree_math import full_like as full_like
from optjax._tree_math import mul as mul
from optjax._tree_math import ones_like as ones_like
from optjax._tree_math import real as real
from optjax._tree_math import scale as scale
from optjax._tree_math import sub as sub
from optjax._tree_math import update_infinity_moment as update_infinity_moment
from optjax._tree_math import update_moment as update_moment
from optjax._tree_math import update_moment_per_elem_norm as update_moment_per_elem_norm
from optjax._tree_math import where as where
from optjax._tree_reduce import allclose as allclose
from optjax._tree_reduce import max as max
from optjax._tree_reduce import min as min
from optjax._tree_reduce import norm as norm
from optjax._tree_reduce import size as size
from optjax._tree_reduce import sum as sum
from optjax._tree_reduce import vdot as vdot
from optjax._tree_state import NamedTupleKey as NamedTupleKey
from optjax._tree_state import get as get
from optjax._tree_state import get_all_with_path as get_all_with_path
from optjax._tree_state import map_params as map_params
from optjax._tree_state import random_like as random_like
from optjax._tree_state import set as set
from optjax._tree_state import split_key_like as split_key_like
from optjax._tree_state import unwrap_random_key_data as unwrap_random_key_data
from optjax._tree_util import abs_square as abs_square
from optjax._tree_util import accumulate as accumulate
from optjax._tree_util import as_array_like as as_array_like
from optjax._tree_util import check_same_shapes as check_same_shapes
from optjax._tree_util import check_same_structure as check_same_structure
from optjax._tree_util import compute_dtype as compute_dtype
from optjax._tree_util import debias as debias
from optjax._tree_util import ema as ema
from optjax._tree_util import get_all_by_name as get_all_by_name
from optjax._tree_util import get_by_name as get_by_name
from optjax._tree_util import get_by_type as get_by_type
from optjax._tree_util import global_norm as global_norm
from optjax._tree_util import global_norm_factors as global_norm_factors
from optjax._tree_util import leaf_mean as leaf_mean
from optjax._tree_util import leaf_sum as leaf_sum
from optjax._tree_util import log_decay as log_decay
from optjax._tree_util import map_like as map_like
from optjax._tree_util import map_with_leaf_values as map_with_leaf_values
from optjax._tree_util import moment_dtype as moment_dtype
from optjax._tree_util import moment_zeros_like as moment_zeros_like
from optjax._tree_util import one_minus_power as one_minus_power
from optjax._tree_util import real_wide_dtype as real_wide_dtype
from optjax._tree_util import real_wide_full_like as real_wide_full_like
from optjax._tree_util import real_wide_zeros_like as real_wide_zeros_like
from optjax._tree_util import safe_increment as safe_increment
from optjax._tree_util import scalar_dtype as scalar_dtype
from optjax._tree_util import scaled as scaled
from optjax._tree_util import set_by_name as set_by_name
from optjax._tree_util import step_as_float as step_as_float
from optjax._tree_util import sum_of_squares as sum_of_squares
from optjax._tree_util import unzip as unzip
from optjax._tree_util import where_leaves as where_leaves
from optjax._tree_util import wide as wide
from optjax._tree_util import wide_dtype as wide_dtype
from optjax._tree_util import wide_full_like as wide_full_like
from optjax._tree_util import wide_zeros_like as wide_zeros_like
from optjax._tree_util import zeros_like as zeros_like

__all__ = [
    "NamedTupleKey",
    "abs_square",
    "accumulate",
    "add",
    "add_scale",
    "allclose",
    "as_array_like",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "check_same_shapes",
    "check_same_structure",
    "clip",
    "compute_dtype",
    "conj",
    "debias",
    "div",
    "dtype",
    "ema",
    "full_like",
    "get",
    "get_all_by_name",
    "get_all_with_path",
    "get_by_name",
    "get_by_type",
    "global_norm",
    "global_norm_factors",
    "leaf_mean",
    "leaf_sum",
    "log_decay",
    "map_like",
    "map_params",
    "map_with_leaf_values",
    "max",
    "min",
    "moment_dtype",
    "moment_zeros_like",
    "mul",
    "norm",
    "one_minus_power",
    "ones_like",
    "random_like",
    "real",
    "real_wide_dtype",
    "real_wide_full_like",
    "real_wide_zeros_like",
    "safe_increment",
    "scalar_dtype",
    "scale",
    "scaled",
    "set",
    "set_by_name",
    "size",
    "split_key_like",
    "step_as_float",
    "sub",
    "sum",
    "sum_of_squares",
    "unwrap_random_key_data",
    "unzip",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "where_leaves",
    "wide",
    "wide_dtype",
    "wide_full_like",
    "wide_zeros_like",
    "zeros_like",
]
