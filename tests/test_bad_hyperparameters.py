"""Every public constructor validates every numeric argument the same way.

The constructors and their numeric arguments are read from the signatures of everything optjax,
optjax.torch_compat and optjax.schedules export; RANGES says what each argument allows, so a new
argument fails `test_every_numeric_argument_has_a_range` until it is added there. For each
argument, bad values (inf, nan, numbers finite in float64 but infinite in float32, strings,
lists, bools, None, values outside the range) raise ValueError naming the argument and the value
received; a traced value (the constructor called inside a trace, as under jit or vmap) is taken
without a TracerBoolConversionError. Only construction is traced here: nothing is compiled.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optjax
from optjax import schedules, torch_compat
from optjax.train import cli

SGD = optjax.sgd(0.1)

# Constructors that take no numeric hyperparameter (transforms of transforms, combinators, ...).
NOT_NUMERIC = {
    "apply_updates",
    "chain",
    "named_chain",
    "stateless",
    "identity",
    "set_to_zero",
    "flat_transform",
    "skip_not_finite",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "masked",
    "freeze",
    "multi_transform",
    "scale_by_schedule",
    "join_schedules",
    "sgdr_schedule",
    "skip_large_updates",  # functions of a step for conditionally_mask and friends
    "microbatch",
    "scale_gradient",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "schedule_free_eval_params",  # (state, params) -> params
    "split_real_and_imaginary",
    "normalize",
    # Functions of arrays, not constructors: their own tests (tests/test_numerics.py,
    # tests/test_gradient_ops.py) check their arguments.
    "safe_norm",
    "unitwise_clip",
    "unitwise_norm",
}

# The arguments each constructor needs besides the one under test.
REQUIRED = {
    "clip": dict(max_delta=1.0),
    "clip_by_block_rms": dict(threshold=1.0),
    "clip_by_global_norm": dict(max_norm=1.0),
    "ema": dict(decay=0.9),
    "scale": dict(step_size=0.1),
    "apply_if_finite": dict(inner=SGD, max_consecutive_errors=3),
    "scale_by_backtracking_linesearch": dict(max_backtracking_steps=5),
    "scale_by_zoom_linesearch": dict(max_linesearch_steps=5),
    "measure_with_ema": dict(measure=lambda u: u),
    "adaptive_grad_clip": dict(clipping=0.1),
    "average_params": dict(inner=SGD),
    "lookahead": dict(fast_optimizer=SGD, sync_period=5, slow_step_size=0.5),
    "MultiSteps": dict(opt=SGD, every_k_schedule=2),
    "constant_schedule": dict(value=1.0),
    "polynomial_schedule": dict(init_value=1.0, end_value=0.0, power=1.0, transition_steps=10),
    "linear_schedule": dict(init_value=1.0, end_value=0.0, transition_steps=10),
    "warmup_constant_schedule": dict(init_value=0.0, peak_value=1.0, warmup_steps=10),
    "exponential_decay": dict(init_value=1.0, transition_steps=10, decay_rate=0.5),
    "piecewise_constant_schedule": dict(init_value=1.0),
    "piecewise_interpolate_schedule": dict(interpolate_type="linear", init_value=1.0),
    "cosine_decay_schedule": dict(init_value=1.0, decay_steps=10),
    "cosine_decay_with_warm_restarts": dict(init_value=1.0, first_period=10),
    "cosine_onecycle_schedule": dict(transition_steps=10, peak_value=1.0),
    "linear_onecycle_schedule": dict(transition_steps=10, peak_value=1.0),
    "warmup_cosine_decay_schedule": dict(
        init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10
    ),
    "warmup_exponential_decay_schedule": dict(
        init_value=0.0, peak_value=1.0, warmup_steps=2, transition_steps=10, decay_rate=0.5
    ),
    "orthogonalize_via_newton_schulz": dict(x=jnp.ones((2, 3)), ns_coeffs=(3.4445, -4.775, 2.0315)),
    "mechanize": dict(base_optimizer=SGD),
    "schedule_free": dict(base_optimizer=SGD, learning_rate=0.1),
    "sam": dict(optimizer=SGD, adv_optimizer=SGD),
    "differentially_private_aggregate": dict(l2_norm_clip=1.0, noise_multiplier=0.1, key=0),
    "dpsgd": dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.1, seed=0),
}
# Arguments that replace another (seed is key's older name): the other is left out of the base.
REPLACES = {("differentially_private_aggregate", "seed"): "key"}
LEARNING_RATE = dict(learning_rate=0.1)  # every other constructor: a learning rate at most

# What each argument allows: by name, then (constructor, name) where a name means two things.
RANGES = {
    "learning_rate": "rate",
    "lr": "rate",
    "b1": "[0, 1)",
    "b2": "[0, 1)",
    "rho": "[0, 1)",
    "decay": "[0, 1)",
    "momentum": "[0, 1]",
    "dampening": "[0, 1]",
    "slow_step_size": "[0, 1]",
    "alpha": "[0, 1]",
    "pct_start": "(0, 1)",
    "pct_final": "(0, 1]",
    "eps": ">= 0",
    "eps_root": ">= 0",
    "epsilon": ">= 0",
    "weight_decay": ">= 0",
    "weight_decay_rate": ">= 0",
    "initial_scale": ">= 0",
    "initial_accumulator_value": ">= 0",
    "lr_decay": ">= 0",
    "momentum_decay": ">= 0",
    "eta": ">= 0",
    "gamma": ">= 0",
    "max_delta": ">= 0",
    "max_norm": ">= 0",
    "decay_rate": ">= 0",
    "m_mul": ">= 0",
    "transition_steps": ">= 0",
    "transition_begin": ">= 0",
    "warmup_steps": ">= 0",
    "threshold": "> 0",
    "min_scale": "> 0",
    "clipping_threshold": "> 0",
    "power": "> 0",
    "decay_steps": "> 0",
    "exponent": "> 0",
    "first_period": "> 0",
    "div_factor": "> 0",
    "final_div_factor": "> 0",
    "init_value": "finite",
    "end_value": "finite",
    "peak_value": "finite",
    "value": "finite",
    "step_size": "finite",
    "beta2_decay": "<= 0",
    "d": ">= 1",
    "t_mul": ">= 1",
    "min_dim_size_to_factor": "int >= 1",
    "sync_period": "int >= 1",
    "every_k": "int >= 1",
    "every_k_schedule": "int >= 1",
    "max_consecutive_errors": "int >= 1",
    "start_step": "int >= 0",
    "decay_offset": "int",
    "step_offset": "int",
    "seed": "int",
    "memory_size": "int >= 1",
    "max_linesearch_steps": "int >= 1",
    "max_backtracking_steps": "int >= 0",
    "slope_rtol": "[0, 1)",
    "decrease_factor": "(0, 1)",
    "max_learning_rate": "> 0",
    "atol": ">= 0",
    "rtol": ">= 0",
    "tol": ">= 0",
    "approx_dec_rtol": ">= 0",
    "stepsize_precision": ">= 0",
    "curv_rtol": ">= 0 or inf",
    ("scale_by_backtracking_linesearch", "increase_factor"): ">= 1 or inf",
    ("scale_by_zoom_linesearch", "increase_factor"): "> 1",
    "k": "int >= 1",
    "b3": "[0, 1)",
    ("scale_by_sm3", "b2"): "[0, 1]",
    "key": "int",
    "scale_factor": "finite",
    "clipping": ">= 0",
    "f_min": "finite",
    ("scale_by_polyak", "max_learning_rate"): ">= 0",
    ("polyak_sgd", "max_learning_rate"): ">= 0",
    "scaling": "rate",
    "optimism": "rate",
    **{
        (name, "alpha"): "rate"
        for name in (
            "scale_by_optimistic_gradient",
            "optimistic_gradient_descent",
            "optimistic_adam_v2",
        )
    },
    **{
        (name, "beta"): "rate"
        for name in (
            "scale_by_optimistic_gradient",
            "optimistic_gradient_descent",
            "optimistic_adam_v2",
        )
    },
    ("signum", "beta"): "[0, 1)",
    "min_norm": ">= 0",
    "trust_coefficient": ">= 0",
    "eta_minus": "(0, 1]",
    "eta_plus": ">= 1",
    "min_step_size": ">= 0",
    "max_step_size": "> 0",
    # Rprop's learning rate is its first step size: a number (0 would freeze it for good).
    ("rprop", "learning_rate"): "> 0",
    ("scale_by_rprop", "learning_rate"): "> 0",
    **{(name, "weight_decay"): "rate" for name in ("lamb", "lars", "scale_by_lars")},
    # Weight decay through add_decayed_weights, which takes a schedule (as optax's does).
    **{
        (name, "weight_decay"): "rate"
        for name in (
            "add_decayed_weights",
            "adamw",
            "nadamw",
            "adamaxw",
            "adadelta",
            "lion",
            "adan",
            "acprop",
            "ademamix",
            "simplified_ademamix",
            "galore",
            "madgrad",
            "schedule_free_adamw",
            "schedule_free_sgd",
            "sophia",
        )
    },
    "betas": "pair",
    "etas": "pair",
    "step_sizes": "pair",
    ("ASGD", "lambd"): ">= 0",
    ("ASGD", "alpha"): ">= 0",  # the power of eta's decay
    ("ASGD", "t0"): ">= 0",
    ("LBFGS", "max_iter"): "int >= 1",
    ("LBFGS", "max_eval"): "int >= 1",
    ("LBFGS", "tolerance_grad"): ">= 0",
    ("LBFGS", "tolerance_change"): ">= 0",
    ("LBFGS", "history_size"): "int >= 1",
    ("Muon", "ns_coefficients"): "coeffs",
    ("Muon", "ns_steps"): "int >= 0",
    ("Muon", "momentum"): "[0, 1]",
    "boundaries_and_scales": "scales",
    ("Adafactor", "eps"): "pair",
    ("trace", "decay"): "[0, 1]",
    ("RMSprop", "alpha"): "[0, 1)",
    ("scale_by_radam", "threshold"): "finite",
    ("radam", "threshold"): "finite",
    ("exponential_decay", "decay_rate"): "> 0",
    ("warmup_exponential_decay_schedule", "decay_rate"): "> 0",
    ("cosine_onecycle_schedule", "transition_steps"): "> 0",
    ("linear_onecycle_schedule", "transition_steps"): "> 0",
    # optjax.contrib
    "beta": "[0, 1)",  # muon's and momo's momentum
    "ns_coeffs": "coeffs",
    "ns_steps": "int >= 1",
    "adam_b1": "[0, 1)",
    "adam_b2": "[0, 1)",
    "adam_eps_root": ">= 0",
    "adam_weight_decay": ">= 0",
    "adam_learning_rate": "rate",
    "consistent_rms": ">= 0",
    "beta3": "[0, 1)",
    "estim_lr0": "> 0",
    "estim_lr_coef": "> 0",
    "init_step": "(kind, > 0)",
    "init_estim_sq_dist": "> 0",
    "reps_rel": "> 0",
    "global_scale": "finite",
    "l2_norm_clip": ">= 0 or inf",
    "noise_multiplier": ">= 0",
    "rank": "int >= 1",
    "update_proj_gap": "int >= 1",
    "scale": "finite",
    "random_seed": "int",
    "s_init": "> 0",
    "num_betas": "int >= 1",
    "lower_bound": "finite",
    "factor": "(0, 1)",
    "patience": "int >= 0",
    "cooldown": "int >= 0",
    "accumulation_size": "int >= 1",
    "clip_threshold": ">= 0",
    "update_interval": "int >= 1",
    "print_win_rate_every_n_steps": "int >= 0",
    "weight_lr_power": ">= 0",
    ("mechanize", "eps"): "> 0",  # 0 would divide 0 by 0 at the first step
    ("scale_by_madgrad", "momentum"): "[0, 1)",
    ("madgrad", "momentum"): "[0, 1)",
    ("reduce_on_plateau", "rtol"): "[0, 1]",
    ("reduce_on_plateau", "min_scale"): "[0, 1]",
    **{(name, "b3"): "[0, 1) or schedule" for name in ("ademamix", "scale_by_ademamix")},
    **{
        (name, "alpha"): "rate"  # a number >= 0 or a schedule
        for name in (
            "ademamix",
            "scale_by_ademamix",
            "simplified_ademamix",
            "scale_by_simplified_ademamix",
        )
    },
    **{(name, "alpha"): "> 0" for name in ("cocob", "scale_by_cocob")},
    **{
        (name, "b1"): "(0, 1]"
        for name in ("schedule_free", "schedule_free_sgd", "schedule_free_adamw")
    },
    **{(name, "warmup_steps"): "int >= 1" for name in ("schedule_free_sgd", "schedule_free_adamw")},
}

# Values outside each range; every float argument also refuses NOT_NUMBERS.
NOT_NUMBERS = [
    math.inf,
    -math.inf,
    math.nan,
    1e39,  # finite in float64, infinite in float32
    -1e39,
    np.float64(1e39),
    "0.9",
    [0.9],
    True,
    None,
    jnp.ones(2),
    1 + 2j,
]
OUTSIDE = {
    "rate": [-1.0, -1e-3],
    "[0, 1)": [1.0, 1.5, -0.1],
    "[0, 1]": [1.5, -0.1],
    "(0, 1)": [0.0, 1.0],
    "(0, 1]": [0.0, 1.5],
    ">= 0": [-1.0, -1e-30],
    "> 0": [0.0, -1.0],
    "finite": [],
    "<= 0": [0.5],
    ">= 0 or inf": [-1.0, -1e-30, -math.inf],
    ">= 1 or inf": [0.5, 0.0, -math.inf],
    "> 1": [1.0, 0.5],
    ">= 1": [0.5],
    "[0, 1) or schedule": [1.0, 1.5, -0.1],
}
# Each pair's (range of its first, range of its second) and a valid pair.
PAIRS = {
    "betas": (("[0, 1)", "[0, 1)"), (0.9, 0.999)),
    "eps": ((">= 0", "> 0"), (None, 1e-3)),  # torch Adafactor's (eps1 or None, eps2)
    "etas": (("(0, 1)", "> 1"), (0.5, 1.2)),  # torch Rprop's (etaminus, etaplus)
    "step_sizes": ((">= 0", ">= 0"), (1e-6, 50.0)),  # torch Rprop's (min, max)
}
NOT_INTEGERS = [1.5, 2.0, "3", [3], True, None, math.inf, math.nan, jnp.ones(2)]
OUTSIDE_INT = {"int >= 1": [0, -1], "int >= 0": [-1], "int": [2**40, -(2**40)]}
STRUCTURAL = {"int >= 1", "int >= 0"}  # sizes and periods used in Python: never traced

# Valid values for arguments whose default is None (or absent): used for traced calls.
VALID = {
    "learning_rate": 0.1,
    "momentum": 0.5,
    "weight_decay_rate": 1e-3,
    "decay": 0.9,
    "max_learning_rate": 1.0,
    "key": 3,
    "seed": 3,
    "optimism": 0.1,
    "end_value": 0.01,
    ("scale_by_factored_rms_torch", "eps"): 1e-3,
    "weight_decay": 1e-3,
    "beta3": 0.99,
    "consistent_rms": 0.2,
    "adam_learning_rate": 0.1,
    "init_estim_sq_dist": 1.0,
    "random_seed": 3,
    "warmup_steps": 2,
}


def _constructors():
    seen, out = set(), []
    for module in (optjax, torch_compat, schedules):
        for name in module.__all__:
            obj = getattr(module, name)
            is_class = inspect.isclass(obj) and name == "MultiSteps"
            if (inspect.isfunction(obj) or is_class) and name not in NOT_NUMERIC:
                if obj not in seen:
                    seen.add(obj)
                    out.append((name, obj))
    return out


def _is_numeric(parameter) -> bool:
    transforms = ("inner", "opt", "fast_optimizer", "hessian_diagonal_fn")
    if parameter.name in (*transforms, "interpolate_type", "linesearch"):
        return False
    default, note = parameter.default, str(parameter.annotation)
    if isinstance(default, bool) or note == "bool":
        return False
    if isinstance(default, (int, float, tuple)):
        return True
    return any(word in note for word in ("float", "int", "Schedule", "Betas"))


def _numeric_arguments():
    for name, make in _constructors():
        for p in inspect.signature(make).parameters.values():
            if _is_numeric(p):
                yield name, make, p


def _range(constructor, argument):
    return RANGES.get((constructor, argument), RANGES.get(argument))


def _base(name, make, argument=None):
    base = dict(REQUIRED.get(name, {}))
    base.pop(REPLACES.get((name, argument)), None)
    parameters = inspect.signature(make).parameters
    if not base and "learning_rate" in parameters:
        if parameters["learning_rate"].default is inspect.Parameter.empty:
            base.update(LEARNING_RATE)
    return base


def _optional(parameter) -> bool:
    return parameter.default is None or "None" in str(parameter.annotation)


def _bad_values(kind, optional):
    if kind.startswith("int"):
        values = NOT_INTEGERS + OUTSIDE_INT[kind]
    else:
        values = NOT_NUMBERS + OUTSIDE[kind]
        if kind.endswith("or inf"):  # +inf is allowed there (e.g. curv_rtol=inf: no condition)
            values = [v for v in values if not (isinstance(v, float) and v == math.inf)]
        if kind not in ("rate", "[0, 1) or schedule"):
            values = [*values, lambda count: 0.5]  # a schedule, where only a number is allowed
    return [v for v in values if not (v is None and optional)]


def _cases():
    """(constructor name, constructor, keyword arguments, the name in the error, bad value)."""
    for name, make, p in _numeric_arguments():
        kind = _range(name, p.name)
        if kind is None:  # test_every_numeric_argument_has_a_range names it
            continue
        if kind == "scales":  # {step: scale}: each scale a finite number >= 0
            for bad in _bad_values(">= 0", optional=False):
                yield name, make, {p.name: {5: bad}}, f"{p.name}[5]", bad
            continue
        if kind == "coeffs":  # Newton-Schulz coefficients: (a, b, c), rows of them, or a preset
            for bad in NOT_NUMBERS:
                if name == "Muon":  # torch's preset names the coefficient it refuses
                    yield name, make, {p.name: (bad, -4.775, 2.0315)}, f"{p.name}[0]", bad
                else:
                    yield name, make, {p.name: (bad, -4.775, 2.0315)}, p.name, (bad, -4.775, 2.0315)
            for bad in ["bad", 3.4445, (3.4445, -4.775), [[1.0, 2.0]], (), None]:
                yield name, make, {p.name: bad}, p.name, bad
            continue
        if kind == "(kind, > 0)":  # DoG's init_step=(kind, value)
            for bad in _bad_values("> 0", optional=False):
                yield name, make, {p.name: ("distance", bad)}, f"{p.name}[1]", bad
            yield name, make, {p.name: ("far", 1.0)}, f"{p.name}[0]", "far"
            for bad in [1.0, "distance", ("distance", 1.0, 2.0), None]:
                yield name, make, {p.name: bad}, p.name, bad
            continue
        if kind == "pair":  # betas=(b1, b2), torch Adafactor's eps=(eps1 or None, eps2), ...
            (first, second), valid = PAIRS[p.name]
            for bad in _bad_values(first, optional=p.name == "eps"):
                yield name, make, {p.name: (bad, valid[1])}, f"{p.name}[0]", bad
            for bad in _bad_values(second, optional=False):
                yield name, make, {p.name: (valid[0], bad)}, f"{p.name}[1]", bad
            for bad in [0.9, "ab", (0.9, 0.99, 0.9)]:
                yield name, make, {p.name: bad}, p.name, bad
            continue
        for bad in _bad_values(kind, _optional(p)):
            yield name, make, {p.name: bad}, p.name, bad


def _grouped_cases():
    groups: dict = {}
    for name, make, kwargs, argument, bad in _cases():
        groups.setdefault((name, argument), (make, []))[1].append((kwargs, bad))
    return [(name, argument, make, cases) for (name, argument), (make, cases) in groups.items()]


GROUPS = _grouped_cases()


def test_every_numeric_argument_has_a_range():
    missing = [f"{n}({p.name})" for n, _, p in _numeric_arguments() if _range(n, p.name) is None]
    assert not missing, f"add these to RANGES: {missing}"
    assert len(GROUPS) > 150  # the enumeration found the API


@pytest.mark.parametrize("name,argument,make,cases", GROUPS, ids=[f"{g[0]}-{g[1]}" for g in GROUPS])
def test_bad_values_raise_naming_the_argument_and_value(name, argument, make, cases):
    """One test per argument, trying each bad value: the message is
    ``NAME must be <range>, got NAME=<value>``."""
    problems = []
    for kwargs, bad in cases:
        try:
            make(**{**_base(name, make, argument), **kwargs})
        except ValueError as error:
            message = str(error)
            shown = f"{argument}={bad!r}" if not callable(bad) else f"{argument}=<function"
            if not message.startswith(f"{argument} must be ") or shown not in message:
                problems.append(f"{bad!r}: message {message!r}")
        except Exception as error:  # noqa: BLE001 -- any other error is a finding
            problems.append(f"{bad!r}: {type(error).__name__}: {error}")
        else:
            problems.append(f"{bad!r}: accepted")
    assert not problems, "\n".join(problems)


def _valid(name, parameter):
    if (name, parameter.name) in VALID:
        return VALID[(name, parameter.name)]
    if parameter.default not in (None, inspect.Parameter.empty):
        return parameter.default
    if parameter.name in REQUIRED.get(name, {}):
        return REQUIRED[name][parameter.name]
    return VALID[parameter.name]


def _traced_cases():
    for name, make, p in _numeric_arguments():
        kind = _range(name, p.name)
        if kind is not None and kind not in STRUCTURAL:
            yield pytest.param(name, make, p, id=f"{name}-{p.name}")


def _use(name, tx):
    """Something that depends on the constructed transform or schedule, to return from a trace."""
    if name == "orthogonalize_via_newton_schulz":  # a function of a matrix: its result
        return tx
    if not hasattr(tx, "init"):  # a schedule
        return tx(jnp.int32(3))
    matrices = ("muon", "scale_by_muon", "scale_by_shape", "galore", "scale_by_galore", "Muon")
    params = {"w": jnp.ones((2, 3) if name in matrices else 3)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    f = lambda p: jnp.sum(p["w"] ** 2)
    extras = {}
    if name == "LBFGS":  # torch's form: the update evaluates the objective itself
        extras = dict(value_fn=f)
    elif name in ("lbfgs", "scale_by_backtracking_linesearch", "scale_by_zoom_linesearch"):
        extras = dict(value=f(params), grad=jax.grad(f)(params), value_fn=f)  # tries f
    elif name in ("polyak_sgd", "scale_by_polyak", "momo", "momo_adam", "reduce_on_plateau"):
        extras = dict(value=jnp.float32(2.0))  # these steps need the loss
    elif name in ("sophia", "scale_by_sophia", "hutchinson_estimator_diag_hessian"):
        extras = dict(obj_fn=f)  # Hutchinson's estimate differentiates the loss
    elif name in ("differentially_private_aggregate", "dpsgd"):
        grads = {"w": jnp.full((2, 3), 0.5)}  # per-example gradients: 2 examples
    updates, _ = tx.update(grads, tx.init(params), params, **extras)
    return updates["w"]


@pytest.mark.parametrize("name,make,parameter", list(_traced_cases()))
def test_traced_values_are_accepted(name, make, parameter):
    """The constructor called inside a trace (what jit and vmap do) with the argument traced,
    then one update (or the schedule at a step) traced too: nothing is compiled."""
    kind = _range(name, parameter.name)
    value = None if kind == "scales" else _valid(name, parameter)
    if kind == "(kind, > 0)":  # the value traced, its kind a string
        jax.make_jaxpr(
            lambda v: _use(name, make(**{**_base(name, make), parameter.name: (value[0], v)}))
        )(jnp.float32(value[1]))
        return
    if kind == "pair":
        first = value[0] if value[0] is not None else 1e-3

        def build(a, b):
            return _use(name, make(**{**_base(name, make), parameter.name: (a, b)}))

        jax.make_jaxpr(build)(jnp.float32(first), jnp.float32(value[1]))
        return
    if kind == "scales":
        jax.make_jaxpr(lambda v: _use(name, make(**_base(name, make), **{parameter.name: {5: v}})))(
            jnp.float32(0.5)
        )
        return
    dtype = jnp.int32 if kind.startswith("int") else jnp.float32

    def build(v):
        return _use(name, make(**{**_base(name, make, parameter.name), parameter.name: v}))

    jax.make_jaxpr(build)(jnp.asarray(value, dtype))


# torch presets under vmap over the hyperparameters they used to branch on in Python.
TORCH_SWEEPS = [
    (torch_compat.SGD, "momentum", [0.0, 0.9], dict(lr=0.1)),
    (torch_compat.SGD, "dampening", [0.0, 0.5], dict(lr=0.1, momentum=0.9)),
    (torch_compat.SGD, "weight_decay", [0.0, 0.1], dict(lr=0.1)),
    (torch_compat.Adagrad, "lr_decay", [0.0, 0.5], dict(lr=0.1)),
    (torch_compat.RMSprop, "momentum", [0.0, 0.5], dict(lr=0.1)),
    (torch_compat.Adam, "weight_decay", [0.0, 0.1], dict(lr=0.1)),
]


@pytest.mark.parametrize(
    "make,argument,values,kwargs",
    TORCH_SWEEPS,
    ids=[f"{m.__name__}-{a}" for m, a, _, _ in TORCH_SWEEPS],
)
def test_torch_presets_vmap_over_hyperparameters_they_branch_on(make, argument, values, kwargs):
    params, grads = jnp.array([1.0, -2.0]), [jnp.array([0.5, 0.25]), jnp.array([-1.0, 2.0])]

    def two_steps(value):
        tx = make(**kwargs, **{argument: value})
        state, p = tx.init(params), params
        for g in grads:
            u, state = tx.update(g, state, p)
            p = optjax.apply_updates(p, u)
        return p

    batched = jax.vmap(two_steps)(jnp.array(values, jnp.float32))
    for value, got in zip(values, batched):
        np.testing.assert_allclose(got, two_steps(value), rtol=1e-6)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lr", "1e39"], "learning_rate must be a finite number >= 0 or a schedule, got"),
        (["--optimizer", "sgd", "--lr", "inf"], "--learning-rate must be finite and >= 0, got inf"),
        (["--optimizer", "adamw", "--lr", "0.1", "--weight-decay", "inf"], "weight_decay=inf"),
        (["--optimizer", "sgd", "--lr", "0.1", "--momentum", "nan"], "momentum=nan"),
        (["--optimizer", "torch.SGD", "--lr", "1e39"], "lr=1e+39"),
    ],
    ids=["lr_1e39", "lr_inf", "weight_decay_inf", "momentum_nan", "torch_lr_1e39"],
)
def test_cli_refuses_hyperparameters_infinite_in_float32(
    tmp_path, monkeypatch, capsys, args, message
):
    monkeypatch.delenv("OPTJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli.main([*args, "--no-download"]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith("python -m optjax.train: error: ")
    assert message in stderr


def test_adafactor_decay_offset_gives_no_nan_at_the_first_steps():
    params = jnp.ones((4, 3))
    tx = optjax.adafactor(0.1, min_dim_size_to_factor=2, decay_offset=3)
    state = tx.init(params)
    for _ in range(4):
        updates, state = tx.update(jnp.full((4, 3), 0.5), state, params)
        assert np.isfinite(np.asarray(updates)).all()
