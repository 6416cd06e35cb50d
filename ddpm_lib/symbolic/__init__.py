"""SymPy derivations of the book, one submodule per chapter.

Each function builds the expressions of a derivation, checks every step symbolically and returns
the verified result, so that the notebooks show the steps and ``tests/`` checks them too.
SymPy is an optional dependency (``pip install ddpm_lib[symbolic]``); it is imported only here.

The submodules share one symbol set and its helpers, defined in :mod:`ddpm_lib.symbolic._common` and importable
from here: ``from ddpm_lib.symbolic import show, latex, alpha_t, alphabar_prev, in_primitives, check_equal``.
"""

from ._common import *  # noqa: F401,F403  (the symbol set and the shared helpers)
from ._common import __all__  # noqa: F401
