"""SymPy derivations of the book, one submodule per chapter.

Each function builds the expressions of a derivation, checks every step symbolically and returns
the verified result, so that the notebooks show the steps and ``tests/`` checks them too.
SymPy is an optional dependency (``pip install ddpm_lib[symbolic]``); it is imported only here.
"""
