"""Optimiser fits in child processes, so that no request-serving process runs them.

A SAAS-GP fit holds a core for tens of seconds; run in a thread of the server process it
competes with every lease and heartbeat for the interpreter and the cores, and a proposer
that fits one study at a time makes every other study wait for that fit. The proposer
(``autopeft_service.proposer``) therefore hands each fit to this pool and goes on serving
the other studies; a study has at most one fit in flight. Proposals that need no model
(the Sobol start, random search) stay in the proposer thread: they take milliseconds.

``concurrent.futures.ProcessPoolExecutor`` does the work (spawned processes: torch and
fork do not mix). What it lacks on Python 3.11 is a way to stop a fit that is running
when the server shuts down; ``close`` terminates the children itself.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import History, Optimizer, Suggestion

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[StudySpec], Optimizer]


def suggest_in_child(factory: OptimizerFactory, spec: StudySpec, n: int,
                     history: History) -> list[Suggestion]:
    """Run in a pool process: build the study's optimiser and propose. Optimisers are
    functions of (spec, history) (their seeds derive from the history), so a fresh one
    proposes what the proposer thread's cached one would have."""
    import torch

    torch.set_num_threads(1)  # one fit per process; the pool's size sets the cores used
    return factory(spec).suggest(n, history)


class ProposalPool:
    """``processes`` child processes running ``suggest`` calls.

    Args:
        processes: how many fits may run at once (each takes one core).
        factory: builds a study's optimiser from its spec; must be picklable (a module-level
            function), since the children import it by name.
    """

    def __init__(self, processes: int, factory: OptimizerFactory) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.processes = processes
        self.factory = factory
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def submit(self, spec: StudySpec, n: int, history: History) -> Future[list[Suggestion]]:
        """Start a fit; the future holds the suggestions or the optimiser's exception.
        A pool broken by a dead child (killed, out of memory) is replaced first."""
        try:
            return self._pool().submit(suggest_in_child, self.factory, spec, n, history)
        except BrokenProcessPool:
            log.warning("proposal pool: a child process died; starting a new pool")
            self._executor = None
            return self._pool().submit(suggest_in_child, self.factory, spec, n, history)

    def close(self) -> None:
        """Cancel queued fits and terminate running ones (a fit can take minutes)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            terminate_executor(executor)


def terminate_executor(executor: Executor) -> None:
    """Cancel an executor's queued work and terminate its child processes (a running fit
    can take minutes; shutdown alone would wait for it)."""
    # Private on 3.11 (3.14 adds terminate_workers): the children, to stop running fits.
    children = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(5)
