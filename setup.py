"""Builds the optional C parts: the batch update of the sparse Merkle tree
(ledger/_smtcore.c and its helpers, ledger/_smtcore_records.h), a batch's identifier
check (ledger/_idcheck.c) and a batch's records decoded (ledger/_anchors.c).

Everything else about the package is in pyproject.toml. ``optional=True``: where no compiler
is at hand the install goes on without them and their Python versions run.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("ledger._smtcore", ["ledger/_smtcore.c"], optional=True,
                  depends=["ledger/_smtcore_records.h"], extra_compile_args=["-O2"]),
        Extension("ledger._idcheck", ["ledger/_idcheck.c"], optional=True,
                  extra_compile_args=["-O2"]),
        Extension("ledger._anchors", ["ledger/_anchors.c"], optional=True,
                  extra_compile_args=["-O2"]),
    ],
)
