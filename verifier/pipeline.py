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

and only then hands each waiting thread its verdict (or error). Jobs that queue
meanwhile wait for the whole round, audit commit included, and then leave together:
on two cores the verifier is CPU-bound, and a node request (HTTP, JSON, the checks
of its header) and an audit commit (an fsync) cost about the same whether they carry
two jobs or ten, so under load bigger batches are what raises throughput. Only when
nothing is queued once the verdicts are in does the leader let the next batch start
during its commit (``Coalescer.release_lead``), so a lone request arriving then is
not held behind that fsync.

Each verification is thus audited exactly once, before its answer: if the audit rows
cannot be written, every job of that batch gets the ``AuditError`` (a 500). A
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
        # Always overlapping the next batch with this commit kept batches at ~4 jobs under
        # the bench's load, against ~7 without: more node requests and fsyncs per
        # verification. So only when nobody waits yet. Each caller still waits for its
        # own row (the audit log orders concurrent batches).
        if self._batcher.queued == 0:
            self._batcher.release_lead()
        rows = []
        for job, got in zip(jobs, outcomes, strict=True):
            if isinstance(got, VerifierError):
                rows.append(job.row("error", (got.code,)))
            else:
                rows.append(job.row("valid" if got.valid else "invalid", tuple(got.failed)))
        self.audit.append_many(rows)  # raises: every job of the batch hears it
        return list(outcomes)
