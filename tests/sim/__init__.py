"""Deterministic simulation of certledger consensus (see docs/simulation.md).

``run_seed(seed, SimOptions(...))`` runs one seeded world and returns its
``Result``; ``python -m tests.sim`` runs many.
"""

from tests.sim.world import Result, SimOptions, run_seed

__all__ = ["Result", "SimOptions", "run_seed"]
