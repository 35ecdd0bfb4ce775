"""`parallel_map`'s pool stops when its work is done, whatever signal handlers the
process that started it has (a fit's SIGTERM handlers only set a flag)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import signal
    import time

    from aspp_seg.data.parallel import parallel_map

    # what Lightning and aspp-seg's Preemption install for a fit: a flag, no exit
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    # the first item returns at once; both workers are then asleep in a long item when
    # the caller stops reading, and the pool stops them with SIGTERM
    results = parallel_map(time.sleep, [0, 120, 120] + [0] * 20, workers=2, desc="test")
    next(results)
    start = time.monotonic()
    results.close()
    print(f"stopped in {time.monotonic() - start:.1f} s")
    """
)


def test_the_pool_ends_although_the_parent_catches_sigterm():
    """The pool ends its workers with SIGTERM; a worker that kept the parent's handler
    lived on and the caller waited for it forever (seen as a fit stuck after its class
    histogram)."""
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60
    )  # the workers' items sleep 120 s: a worker that ignores SIGTERM times this out
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stopped in"), result.stdout


def test_a_process_ends_with_data_loader_workers_still_alive():
    """A loader's workers ignore SIGTERM (`ignore_ctrl_c`), the signal multiprocessing's
    exit hook stops children with before waiting for them: a process that ended while an
    iterator was still referenced (a failed predict's traceback kept by the caller) used
    to wait for its workers forever, and CI with it."""
    program = textwrap.dedent(
        """
        from torch.utils.data import DataLoader

        from aspp_seg.data.parallel import ignore_ctrl_c

        loader = DataLoader(list(range(64)), num_workers=2, worker_init_fn=ignore_ctrl_c)
        KEPT = iter(loader)  # referenced until the interpreter ends
        next(KEPT)
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
