"""Test-wide settings: Hypothesis runs without per-example deadlines.

CI shares two cores with the cluster tests' validator processes, so a property test's
example can now and then take longer than Hypothesis's default 200 ms deadline for
reasons that say nothing about the code; Hypothesis then reports the test as failed
("Flaky" / "DeadlineExceeded") and the run does not land. Each test's own ``settings``
still choose its example counts and health checks.
"""

from hypothesis import settings

settings.register_profile("certledger", deadline=None)
settings.load_profile("certledger")
