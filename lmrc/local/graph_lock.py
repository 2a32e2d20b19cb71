"""One writer or many readers of an embedded graph on this machine, said in one line.

LadybugDB allows one process to write a database and none to read it meanwhile; two ``lmrc run``
on the same graph corrupted each other (the second emptied the first's graph, both ended in
tracebacks). ``lmrc run`` holds ``<graph>.lock`` exclusively for its whole run (before it empties
the graph), ``lmrc graph`` commands hold it shared while they read; whoever comes second is told
who holds it and stops before touching anything. The lock is the kernel's (``flock``): it goes
with its process, also when that process is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class GraphInUseError(RuntimeError):
    """Another process holds the graph; the message says which and what to do."""


def lock_path(graph: Path) -> Path:
    return graph.parent / f"{graph.name}.lock"


@contextlib.contextmanager
def graph_lock(graph: Path, exclusive: bool) -> Iterator[None]:
    """Hold ``graph``'s lock (exclusive: a run that writes; shared: a command that reads)."""
    path = lock_path(graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            who = f"lmrc (pid {holder}: a run or lmrc up)" if holder.isdigit() else "another lmrc command"
            wanted = "write" if exclusive else "read"
            raise GraphInUseError(
                f"{graph} is in use by {who}; cannot {wanted} it now: wait for it to end, or give "
                "this command another graph (--graph / --path)"
            ) from None
        if exclusive:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        try:
            yield
        finally:
            if exclusive:
                handle.seek(0)
                handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
