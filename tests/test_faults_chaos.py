"""Random faults on a real four-validator cluster under load, judged by what clients saw.

For ``CERTLEDGER_CHAOS_SECONDS`` (default 30) a ``tests.chaos.Nemesis`` seeded with
``CERTLEDGER_CHAOS_SEED`` (default 1) applies one fault after another - SIGKILLs (up
to two nodes down, so a halt and its recovery happen too), SIGTERMs, restarts,
partitions, one-way cuts, slow and lossy links - while a client submits single
certificates (and now and then a batch of 500) to random running nodes and asks
random nodes whether they committed, and an observer reads every running node's new
blocks and height. ``tests.chaos.History`` judges it all: no two blocks at one height
anywhere, no node reporting a lower height than it did before, no tx told committed in
two places, and - liveness - while the nemesis kept a quorum running and linked, no
``LIVE_WITHIN`` seconds passed without a commit (every run has at least one such
stretch that long: the nemesis's ``calm`` step). Every run also holds an even split of
all four running nodes (the ``split`` step), where a quorum one vote too small would
let both sides commit: with the quorum lowered to 2f by hand, seeds 1-5 each fail with
divergence. Then everything is repaired, and the cluster must commit two more heights
within 60 s, every tx a client was told is committed must be in the told block on
every node, every node must stop cleanly on SIGTERM, and ``ledger.audit`` must pass on
every store.

A longer or different run: ``CERTLEDGER_CHAOS_SECONDS=300 CERTLEDGER_CHAOS_SEED=7
pytest tests/test_faults_chaos.py``. The schedule (a function of the seed) and the
violations are printed on failure. Every wait is bounded; only pids the cluster
object started are signalled.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.chaos import History, Nemesis
from tests.cluster import Cluster

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("CERTLEDGER_CHAOS_SECONDS", "30"))
SEED = int(os.environ.get("CERTLEDGER_CHAOS_SEED", "1"))
SUBMIT_EVERY = 0.02  # s between client submissions: load, not a benchmark
BATCH_EVERY, BATCH = 100, 500  # every 100th submission is a batch of 500 certificates
RECOVER_WITHIN = 60.0  # s after repair for two new heights on every node
OWED_WITHIN = 60.0  # s past SECONDS to finish the kinds of fault still owed
#: s without a commit while a quorum is up and linked. With the tests' timeouts a round
#: at round r lasts about 2.5 + 0.75 r s; a long split leaves the nodes a few rounds in,
#: and the quorum may first sit out a round whose proposer is outside it, and catch a
#: restarted member up.
LIVE_WITHIN = 12.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.create(tmp_path_factory.mktemp("faults-chaos")) as c:
        c.proxy_links()
        c.start()
        c.wait_height(1, timeout=40)
        yield c


def _guard(what: list[str], fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` in a thread; an unexpected exception is kept for the failure message
    (node errors are expected under faults and handled inside ``fn``)."""
    def run() -> None:
        try:
            fn()
        except Exception as exc:  # reported by the test
            what.append(f"{fn.__name__}: {exc!r}")
    return run


def test_random_faults_keep_every_client_answer_true(cluster: Cluster) -> None:
    c = cluster
    history, lock = History(), threading.Lock()
    nemesis = Nemesis(c, random.Random(SEED), calm_s=LIVE_WITHIN + 3)
    stop = threading.Event()
    crashed: list[str] = []
    submitted: list[str] = []  # tx ids (hex) a node accepted (202)
    rng = random.Random(SEED + 1)  # the client's choice of nodes

    def running() -> list[str]:
        return sorted(c.procs)

    def load() -> None:
        i = 0
        with requests.Session() as s:
            while not stop.is_set():
                # Now and then a batch, so larger blocks meet the faults too.
                tx = (c.batch_tx(f"CB{i:06d}", BATCH)[0] if i % BATCH_EVERY == BATCH_EVERY - 1
                      else c.issue_tx(f"CHAOS{i:06d}"))
                i += 1
                names = running()
                if names:
                    try:
                        r = c.submit(rng.choice(names), tx, s, timeout=3)
                        if r.status_code == 202:
                            submitted.append(tx.id.hex())
                    except requests.RequestException:
                        pass  # a killed or cut-off node: clients see errors
                stop.wait(SUBMIT_EVERY)

    def confirm() -> None:
        # Round-robin over the unconfirmed txs, so the ones a killed node lost (they
        # never commit) do not starve the rest.
        queue: deque[str] = deque()
        taken = 0
        with requests.Session() as s:
            while not stop.is_set():
                queue.extend(submitted[taken:])
                taken = len(submitted)
                for _ in range(min(len(queue), 200)):
                    names = running()
                    if stop.is_set() or not names:
                        break
                    tid, node = queue.popleft(), rng.choice(names)
                    try:
                        body = s.get(f"{c.url(node)}/v1/transactions/{tid}", timeout=3).json()
                    except (requests.RequestException, ValueError):
                        body = {}
                    if body.get("status") == "committed":
                        with lock:
                            history.told(tid, int(body["height"]), body["block_hash"], node)
                    else:
                        queue.append(tid)
                stop.wait(0.2)

    def observe() -> None:
        nxt: dict[str, int] = {}
        while not stop.is_set():
            for node in running():
                try:
                    h = int(c.status(node)["height"])
                    blocks = c.chain(node, start=nxt.get(node, 1))
                except (requests.RequestException, ValueError, KeyError, AssertionError):
                    continue  # killed, starting, or cut off mid-read
                with lock:
                    history.height(node, h)
                    for b in blocks:
                        history.block(node, b.height, b.hash.hex())
                if blocks:
                    nxt[node] = blocks[-1].height + 1
            stop.wait(0.5)

    threads = [threading.Thread(target=_guard(crashed, f), daemon=True)
               for f in (load, confirm, observe)]
    for t in threads:
        t.start()
    exited: list[str] = []
    stuck = ""
    try:
        deadline = time.monotonic() + SECONDS
        # Past the deadline (by at most OWED_WITHIN) only for the kinds not drawn yet:
        # the calm step is what liveness is judged on, the split where a wrongly small
        # quorum shows.
        while (time.monotonic() < deadline
               or (nemesis.owed and time.monotonic() < deadline + OWED_WITHIN)):
            stop.wait(nemesis.step())
            for name, proc in list(c.procs.items()):
                if proc.poll() is not None:  # a node that died without our signal
                    exited.append(f"{name} exited by itself with {proc.returncode}:\n"
                                  f"{c.log(name)}")
                    c.procs.pop(name)
        nemesis.repair()
        top = max(history.top.values(), default=0)
        try:
            c.wait_height(top + 2, timeout=RECOVER_WITHIN, names=c.names)
        except AssertionError as exc:  # judged after safety, which may explain it
            stuck = str(exc)[:3000]
        nemesis.close()
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    schedule = "\n".join(nemesis.log)
    context = f"seed {SEED}, schedule:\n{schedule}"
    assert not any(t.is_alive() for t in threads), "client threads did not finish"
    assert not crashed, (crashed, context)

    # The confirmations went on while the nodes kept committing: wait until every node
    # holds the highest told height, so a node read a moment behind is not "lost".
    told_top = max((h for h, _, _ in history.answers.values()), default=0)
    if not stuck:
        try:
            c.wait_height(told_top, timeout=RECOVER_WITHIN, names=c.names)
        except AssertionError as exc:
            stuck = str(exc)[:3000]
    final = {}
    for n in c.names:
        try:
            final[n] = [(b.hash.hex(), [t.hex() for t in b.tx_ids]) for b in c.chain(n)]
        except requests.RequestException as exc:
            exited.append(f"{n} does not answer after the repair: {exc}\n{c.log(n)}")
    history.final(final)
    first: dict[int, float] = {}  # height -> first commit anywhere (epoch s)
    for n in c.names:
        for h, when in c.commit_times(n).items():
            first[h] = min(when, first.get(h, when))
    gaps = history.stalls(nemesis.windows, first, LIVE_WITHIN)
    # Safety first: a broken rule can also explain a crash or a halt.
    assert not history.violations, ("\n".join(history.violations[:20]), context)
    assert not exited, (exited, context)
    assert not stuck, (f"no recovery after repair: {stuck}", context)

    # The run was not vacuous: faults of every kind happened and clients got answers.
    kinds = ("SIGKILL", "SIGTERM", "partition", "one-way", "slow", "start", "split")
    assert all(any(k in line for line in nemesis.log) for k in kinds), context
    assert not nemesis.owed, (nemesis.owed, context)
    assert len(history.answers) >= 50, (len(history.answers), len(submitted), context)
    assert gaps, ("no stretch with a linked quorum was long enough to judge liveness",
                   nemesis.windows, context)
    assert all(code == 0 for _, code in nemesis.stop_codes), (nemesis.stop_codes, context)

    codes = c.stop()
    assert codes == dict.fromkeys(c.names, 0), {n: c.log(n) for n in c.names}
    c.audit_all("after the faults and a clean stop")
    on_chain = {t for _, txs in final[c.names[0]] for t in txs}
    print(f"chaos seed {SEED}: {len(history.answers)} txs told committed, "
          f"{len(on_chain & set(submitted))} of {len(submitted)} accepted on the chain, "
          f"heights {history.top}; liveness judged on {len(gaps)} stretches, longest "
          f"time without a commit in each {', '.join(f'{g:.1f}' for g in gaps)} s\n"
          f"{schedule}")
