"""Peer messaging and node access over HTTP.

* ``envelope`` — signed msgpack envelopes, batches and replay protection;
* ``transport`` — per-peer sender threads with bounded queues, batching, back-off;
* ``client`` — the failover HTTP client for the node API (CLI, verifier);
* ``proxy`` — a fault-injecting TCP proxy for partition tests;
* ``testing`` — a WSGI app on a loopback port in a thread, and bounded waits;
* ``errors`` — ``NetworkError`` and its subclasses.

Imports only ``certificates`` among this project's packages.
"""
