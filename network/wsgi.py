"""Stopping a waitress server that runs on a thread, without racing its own threads.

How it works: waitress's loop thread exits when its socket map is empty, and the only way
in from another thread is its trigger pipe (``pull_trigger(thunk)`` queues the thunk and
writes a byte). Its worker threads pull the same trigger after each response. So
``stop_waitress`` goes in three steps:

1. a thunk on the loop closes the listening socket and every connection, but not the
   trigger (the listener's own ``close`` would close it too); we wait (bounded) until it
   has run, so no request can arrive after step 2;
2. the worker threads finish what they are doing and end (``task_dispatcher.shutdown``):
   none is left to pull the trigger;
3. a last thunk closes the trigger; the map is empty and the loop ends.

Closing the trigger in step 1, as this used to, raced the workers: one finishing a
request then wrote to a closed pipe and waitress logged the EBADF as an error. And a
queued thunk can run before the write that was to wake the loop for it (a worker's byte
woke it first); when that thunk closed the trigger, that write failed the same way, which
``_pull`` absorbs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from waitress import wasyncore


def _pull(trigger: Any, thunk: Any) -> None:
    try:
        trigger.pull_trigger(thunk)
    except OSError:
        # The loop ran the thunk before our write and the thunk closed the trigger: the
        # write was only to wake the loop for it.
        if not trigger._closed:
            raise


def stop_waitress(server: Any, thread: threading.Thread, timeout: float) -> bool:
    """Stop ``server`` (``waitress.create_server``) whose ``run`` is on ``thread``; True
    when the loop thread ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    trigger, socket_map = server.trigger, server._map

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    if not thread.is_alive():
        server.task_dispatcher.shutdown(timeout=remaining())
        server.close()
        return True
    closed = threading.Event()

    def close_connections() -> None:  # on the loop thread: the map is its own
        for dispatcher in list(socket_map.values()):
            if dispatcher is server:
                # The listener's own close() closes the trigger too; the socket only.
                wasyncore.dispatcher.close(server)
            elif dispatcher is not trigger:
                dispatcher.close()
        closed.set()

    _pull(trigger, close_connections)
    closed.wait(remaining())
    server.task_dispatcher.shutdown(timeout=remaining())
    _pull(trigger, trigger.close)
    thread.join(remaining())
    return not thread.is_alive()
