"""A parallel map over files with a progress bar, for the data commands
(`prepare-cityscapes`, `check-data`)."""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    function: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    desc: str,
    serial_below: int = 16,
) -> Iterator[R]:
    """Yields ``function(item)`` for every item, in completion order, with a progress bar.

    Runs in this process when `workers` <= 1 or there are fewer than `serial_below`
    items (starting processes would cost more than the work); otherwise in a pool of
    `workers` forked processes, created before the progress bar's monitor thread so
    that no thread is forked. `function` must be a module-level function.

    The workers take the default action of SIGTERM and SIGUSR1 back (`_worker_signals`):
    a fork inherits the parent's Python handlers, and a fit's handlers (Lightning's,
    `Preemption`) only set a flag, so the pool's own stop (SIGTERM to each worker) left a
    worker alive and the fit waiting for it forever.
    """
    pool = None
    results: Iterable[R]
    if workers > 1 and len(items) >= serial_below:
        pool = multiprocessing.get_context("fork").Pool(
            min(workers, len(items)), initializer=_worker_signals
        )
        chunk = max(1, len(items) // (8 * workers))
        results = pool.imap_unordered(function, items, chunksize=chunk)
    else:
        results = map(function, items)
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not items)
    try:
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def _worker_signals() -> None:
    """A pool worker: Ctrl-C is the parent's to handle; SIGTERM and SIGUSR1 end it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)


def ignore_ctrl_c(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: data workers leave Ctrl-C, SIGTERM and SIGUSR1 to
    the main process, which stops at its next step or batch and shuts them down (torch
    ends the workers of a main process that died). A terminal's SIGINT and SLURM's SIGTERM
    at preemption reach every process of the job: a worker would otherwise print a
    KeyboardInterrupt traceback, or die and stop the main process with a "DataLoader
    worker ... killed by signal" traceback before it saves its step."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


def _end_daemonic_children() -> None:
    """At exit, ends the daemonic child processes still alive, as multiprocessing's own
    exit hook does, but with SIGKILL for one that outlives SIGTERM by a second.

    DataLoader workers are daemonic and ignore SIGTERM (`ignore_ctrl_c`), and SIGTERM is
    how that hook stops the children it then waits for: a process that ended while a
    loader's iterator was still referenced (say, by an exception's traceback) waited for
    its workers forever. A worker only reads files; nothing of it needs saving."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=1)
        if child.is_alive():
            child.kill()
            child.join()


# registered after multiprocessing's exit hook (imported above), so it runs before it
atexit.register(_end_daemonic_children)
