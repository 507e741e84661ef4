"""Builds the optional C batch update of the sparse Merkle tree (ledger/_smtcore.c and
its helpers, ledger/_smtcore_records.h).

Everything else about the package is in pyproject.toml. ``optional=True``: where no compiler
is at hand the install goes on without it and ``ledger.smt_update`` runs its Python version.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("ledger._smtcore", ["ledger/_smtcore.c"], optional=True,
                  depends=["ledger/_smtcore_records.h"], extra_compile_args=["-O2"]),
    ],
)
