"""Concurrent department verifications done together: evidence, verdicts, audit rows.

Why: under load each ``POST /v1/verify`` thread used to wait twice - for its
batched node look-up, then for its audit row's group commit - and every wait is a
wake-up from another thread (a futex call and a context switch, which on a
two-core machine cost as much as the verification itself). ``AuditedVerifier``
makes it one wait: a request thread queues its job (who, why, what was shown)
on a ``Coalescer``; the leader takes every job queued and

1. gets the evidence of all of them in one look-up (``VerificationService.verify_many``
   -> ``LightClient.evidence_many``: one request per node asked);
2. runs every check of ``logic.verify`` for each job on its own evidence;
3. appends one audit row per job - valid, invalid, or ``error`` with the error's
   code - in one transaction (``AuditLog.append_many``);

and only then hands each waiting thread its verdict (or error). (Once a batch
has its verdicts the next batch may start, so that its node look-up overlaps this
batch's audit commit: ``Coalescer.release_lead``.) So each
verification is audited exactly once, before its answer: if the audit rows cannot
be written, every job of that batch gets the ``AuditError`` (a 500), as before. A
job still queued after ``wait_timeout`` leaves the queue and is audited as an
``error`` by its own thread; a job a leader took is waited for to the end (the
look-up is bounded by the nodes' timeouts).
"""

from __future__ import annotations

from dataclasses import dataclass

from certificates.anchor import SignedAnchor
from verifier.audit import AuditLog, Row
from verifier.auth import Principal
from verifier.coalesce import Coalescer, WaitTimeout
from verifier.errors import VerifierError
from verifier.logic import Subject, Verdict
from verifier.service import VerificationService

#: How long a job may wait in the queue (not in flight) before it gives up.
QUEUE_WAIT = 60.0


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one job, one caller
class Job:
    principal: Principal
    purpose: str
    subject: Subject
    anchor: SignedAnchor | None
    channel: str

    def row(self, result: str, failed: tuple[str, ...]) -> Row:
        return Row(self.principal.department, self.principal.key_id, self.subject.meta.id,
                   self.purpose, result, failed, self.channel)


class AuditedVerifier:
    def __init__(self, service: VerificationService, audit: AuditLog, *,
                 max_batch: int = 64, wait_timeout: float = QUEUE_WAIT) -> None:
        self.service, self.audit = service, audit
        self._batcher: Coalescer[Job, Verdict] = Coalescer(
            self._run, max_batch=max_batch, wait_timeout=wait_timeout, wait_in_flight=True)

    def verify(self, job: Job) -> Verdict:
        """The verdict of ``job``, its audit row written; its VerifierError if it failed."""
        try:
            return self._batcher.get(job)
        except WaitTimeout as exc:
            # Never taken into a batch (see the module header): nobody else writes its row.
            self.audit.append_many([job.row("error", (exc.code,))])
            raise

    def _run(self, jobs: list[Job]) -> list[Verdict | BaseException]:
        outcomes = self.service.verify_many([(j.subject, j.anchor, j.channel) for j in jobs])
        # The next batch may ask the nodes while this one's rows are committed; each
        # caller still waits for its own row (the audit log orders concurrent batches).
        self._batcher.release_lead()
        rows = []
        for job, got in zip(jobs, outcomes, strict=True):
            if isinstance(got, VerifierError):
                rows.append(job.row("error", (got.code,)))
            else:
                rows.append(job.row("valid" if got.valid else "invalid", tuple(got.failed)))
        self.audit.append_many(rows)  # raises: every job of the batch hears it
        return list(outcomes)
