"""Run scoring tasks on a pool of worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from videolisa.errors import InvalidInputError

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS / Windows
        return os.cpu_count() or 1


def check_workers(workers: int | None, name: str = "workers") -> int:
    """``workers`` (``None``: :func:`default_workers`), refused with an error naming ``name`` unless >= 1."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InvalidInputError(f"{name} must be at least 1 (worker processes), got {workers}")
    return workers


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver where available, its server having imported the scoring code once
    (:mod:`videolisa.metrics.preload`).

    Plain fork is not safe here: once OpenCV has run in this process its worker threads exist, and
    a forked child can deadlock on a lock one of them held.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["videolisa.metrics.preload"])
    return context


def start_pool_server(workers: int | None) -> None:
    """Start the pool's forkserver now, if :func:`run_tasks` will use one (``workers`` > 1).

    The server spends a few tenths of a second starting an interpreter and importing the scoring
    code; started first thing, it does so while this process imports numpy and lists the
    benchmark's files, instead of after. A no-op when the server already runs or none is used. (The
    number of tasks is not known yet: a run that turns out to have one task scores in this process
    and leaves the server idle.)
    """
    workers = default_workers() if workers is None else workers
    if workers > 1 and _pool_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def run_tasks(
    function: Callable[[TaskT], ResultT], tasks: Sequence[TaskT], workers: int | None, description: str
) -> list[ResultT]:
    """``[function(task) for task in tasks]``, on ``workers`` processes (in this process when 1).

    Results come back in task order. The first task that raises stops the pool and its exception
    (for example an :class:`~videolisa.errors.InvalidInputError` naming a file) is re-raised here.
    """
    # Imported here: `videolisa score` imports this module before it starts the pool's server, and
    # these two (~0.08 s) need not delay that.
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    from tqdm import tqdm

    workers = check_workers(workers)
    if workers == 1 or len(tasks) <= 1:
        return [function(task) for task in tqdm(tasks, desc=description, unit="seq", leave=False)]
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=_pool_context()) as pool:
        futures = [pool.submit(function, task) for task in tasks]
        with tqdm(total=len(futures), desc=description, unit="seq", leave=False) as progress:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                progress.update(len(done))
                failed = next((future for future in done if future.exception() is not None), None)
                if failed is not None:
                    for future in pending:
                        future.cancel()
                    raise failed.exception()
        return [future.result() for future in futures]
