"""The verifier: checks certificates against the chain without trusting any single node.

Layers, lowest first (each module's header says how it works):

* ``evidence``    - node answers as data (record, SMT proof, header bytes, commit), unchecked;
* ``trust``       - the root of trust: genesis or a trust bundle (``TrustedState``);
* ``lightclient`` - checks header, commit certificate and state proof; asks nodes in turn
  and refuses forged or stale answers; follows validator-set changes;
* ``compact``, ``qr`` - compact presentations (hidden subtrees folded) and QR payloads;
* ``logic``       - framework-free verification: named checks -> ``Verdict``;
* ``auth``, ``audit``, ``metrics`` - department keys, purpose, rate limit, audit log;
* ``coalesce``, ``pipeline`` - concurrent requests batched: one node look-up and one audit
  commit for many verifications;
* ``service``, ``sources``, ``app``, ``fastpath``, ``pages`` - the HTTP service (Flask,
  waitress; ``POST /v1/verify`` as plain WSGI ahead of Flask).

Imports: certificates, ledger (records, block, commit, smt, genesis), network - never node.
"""
