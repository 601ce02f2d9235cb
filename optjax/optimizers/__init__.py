"""The optimizers: each a chain of primitives, with optax's names, arguments and defaults, in
one module per family.

The update rule of each lives on its primitives (see optjax.transforms); an optimizer's docstring
says what is chained.
"""

from optjax.optimizers.adaptive_variants import adabelief as adabelief
from optjax.optimizers.adaptive_variants import adan as adan
from optjax.optimizers.adaptive_variants import novograd as novograd
from optjax.optimizers.adaptive_variants import sm3 as sm3
from optjax.optimizers.adaptive_variants import yogi as yogi
from optjax.optimizers.classic import adadelta as adadelta
from optjax.optimizers.classic import adafactor as adafactor
from optjax.optimizers.classic import adafactor_relative_step as adafactor_relative_step
from optjax.optimizers.classic import adagrad as adagrad
from optjax.optimizers.classic import adam as adam
from optjax.optimizers.classic import adamax as adamax
from optjax.optimizers.classic import adamaxw as adamaxw
from optjax.optimizers.classic import adamw as adamw
from optjax.optimizers.classic import amsgrad as amsgrad
from optjax.optimizers.classic import lion as lion
from optjax.optimizers.classic import nadam as nadam
from optjax.optimizers.classic import nadamw as nadamw
from optjax.optimizers.classic import radam as radam
from optjax.optimizers.classic import rmsprop as rmsprop
from optjax.optimizers.classic import sgd as sgd
from optjax.optimizers.layerwise import fromage as fromage
from optjax.optimizers.layerwise import lamb as lamb
from optjax.optimizers.layerwise import lars as lars
from optjax.optimizers.lbfgs import lbfgs as lbfgs
from optjax.optimizers.optimistic import noisy_sgd as noisy_sgd
from optjax.optimizers.optimistic import optimistic_adam as optimistic_adam
from optjax.optimizers.optimistic import optimistic_adam_v2 as optimistic_adam_v2
from optjax.optimizers.optimistic import optimistic_gradient_descent as optimistic_gradient_descent
from optjax.optimizers.optimistic import polyak_sgd as polyak_sgd
from optjax.optimizers.sign import rprop as rprop
from optjax.optimizers.sign import sign_sgd as sign_sgd
from optjax.optimizers.sign import signum as signum

__all__ = [
    "adabelief",
    "adadelta",
    "adafactor",
    "adafactor_relative_step",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "amsgrad",
    "fromage",
    "lamb",
    "lars",
    "lbfgs",
    "lion",
    "nadam",
    "nadamw",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sign_sgd",
    "signum",
    "sm3",
    "yogi",
]
