"""Keep Snakemake's job scheduler from waking itself more and more often (a workaround).

Snakemake 9 (seen in 9.27.1, the pinned version) applies a job rate limit by default
(``--max-jobs-per-timespan 100/1s``). To honour it, every scheduling pass that finds jobs ready
ends by starting a timer that wakes the scheduler again one timespan later
(``JobScheduler._schedule_reevalutation``). A pass woken by that timer starts the next timer,
and a pass woken by a finished job starts one more, so while ready jobs wait for cores (the
demo's normal state: 2 cores, 2-thread jobs) the timers add up to chains that never stop. Each
pass stats every input of every ready job, and the rules list the package sources they run as
inputs (``code()`` in rules/common.smk), dozens per job. Measured on the demo (the README's
first command, 2 cores, an AVX2 Zen 3): about 45 timers started a second by its 44th job, the
Snakemake process itself then using a quarter of one core. In all, 24.1 s of CPU with this
workaround against 208.7 s without, and the demo 1288 against 1410 s (docs/performance.md).

:func:`one_pending_wakeup` makes the scheduler keep at most one such timer: a pass that finds
one still pending starts none. The rate limit is still re-checked within one timespan, and a
finished job still wakes the scheduler at once through its own release of the scheduler's
semaphore, so the passes that go are those woken by the extra timers, which find every core
busy and start nothing. On a Snakemake other than 9.x, or whose scheduler lacks the method or
gives it another signature, nothing is changed.
"""

from __future__ import annotations

import threading

_STATE = "_matchrepro_wakeup"  # (lock, [pending]) on the scheduler


def _schedule_one_wakeup(scheduler, delay: float) -> None:
    """``JobScheduler._schedule_reevalutation`` with at most one timer pending per scheduler.

    The timer clears the pending mark before it wakes the scheduler, so the pass it wakes can
    start the next one: the chain of wake-ups goes on, one at a time."""
    state = scheduler.__dict__.setdefault(_STATE, (threading.Lock(), [False]))
    lock, pending = state
    with lock:
        if pending[0]:
            return
        pending[0] = True

    def wake() -> None:
        with lock:
            pending[0] = False
        scheduler._open_jobs.release()

    threading.Timer(delay, wake).start()


def one_pending_wakeup() -> bool:
    """Install :func:`_schedule_one_wakeup` on Snakemake's ``JobScheduler``; True when installed
    (now or before), False when this Snakemake is not 9.x or has no such method to replace."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    import inspect

    import snakemake

    original = getattr(JobScheduler, "_schedule_reevalutation", None)
    if original is _schedule_one_wakeup:
        return True
    if (original is None or not snakemake.__version__.startswith("9.")
            or list(inspect.signature(original).parameters) != ["self", "delay"]):
        return False
    JobScheduler._schedule_reevalutation = _schedule_one_wakeup
    return True
