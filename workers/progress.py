"""Progress of a trial, for people: the runner reports phases and counts to an observer.

``TrialRunner.run`` calls a ``TrialObserver`` at each phase (loading, tokenising,
training, scoring, saving) and after each training step or scored batch; the runner itself
draws and logs nothing. Renderers:

* ``RichProgress``: live bars on a terminal (``autopeft trial`` with stderr a terminal);
* ``LineProgress``: a plain line at each phase start and at most every ``interval``
  seconds, with counts and an ETA, written through any ``emit`` function (``print`` to
  stderr for ``autopeft trial`` on a pipe, ``logging`` in ``autopeft worker``).

The observer only watches: stopping a trial is the ``progress`` callback's job
(``workers.trial.ProgressCallback``, what the worker's heartbeats use). Imports neither
torch nor the server; rich is imported only by ``RichProgress``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID


class Phase(Enum):
    """The phases of a trial, in the order the runner enters them (value: the label).

    Scoring held-out is skipped by a trial without a held-out split and saving by one
    without an artefact folder; the others always happen.
    """

    LOADING_DATA = "loading data"
    LOADING_MODEL = "loading model"
    TOKENISING = "tokenising data"
    BUILDING = "building PEFT model"
    TRAINING = "training"
    SCORING_HELD_OUT = "scoring held-out"
    SCORING_DEV = "scoring dev"
    SAVING = "saving artefact"

    @property
    def unit(self) -> str:
        """What the phase counts: ``steps`` (training), ``examples`` (scoring) or ``""``."""
        if self is Phase.TRAINING:
            return "steps"
        return "examples" if self in (Phase.SCORING_HELD_OUT, Phase.SCORING_DEV) else ""


class TrialObserver:
    """Receives a trial's progress. Every method is a no-op: subclasses override some.

    The runner calls ``phase`` at each phase start, ``advance`` as the phase's count grows
    (training: after every step; scoring: after every batch), and ``done`` once the trial
    has succeeded. An observer is also a context manager (the renderer's display is closed
    on exit, also when the trial fails).
    """

    def phase(self, phase: Phase, total: int | None = None) -> None:
        """A phase starts.

        Args:
            phase: the phase.
            total: steps (training) or examples (scoring) it will count to; None for
                phases that count nothing.
        """

    def advance(self, done: int, loss: float | None = None) -> None:
        """The current phase's count is now ``done`` (it grows to the phase's ``total``).

        Args:
            done: steps trained or examples scored so far in this phase.
            loss: the last training loss (training only).
        """

    def done(self) -> None:
        """The trial finished (not called when it failed)."""

    def __enter__(self) -> TrialObserver:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Nothing to close here (renderers close their display)."""


def estimate_remaining(elapsed: float, done: int, total: int) -> float | None:
    """Seconds left at a constant rate, or None before anything is done.

    Args:
        elapsed: seconds since the phase started.
        done: units done so far.
        total: units in the phase.

    Returns:
        ``elapsed * (total - done) / done`` (0 when done), None when ``done`` is 0.
    """
    if done <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``; ``?`` for None."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class LineProgress(TrialObserver):
    """Plain progress lines: one at each phase start, then at most one per ``interval``
    seconds with the counts and an ETA, and one when the trial is done.

    Args:
        emit: writes one line (``print`` to stderr, ``logging.Logger.info``, ...).
        interval: least seconds between two count lines of a phase.
        prefix: starts every line (``trial``, ``trial 12``).
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, emit: Callable[[str], None], interval: float = 10.0,
                 prefix: str = "trial", clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.interval = interval
        self.prefix = prefix
        self.clock = clock
        self._phase: Phase | None = None
        self._total: int | None = None
        self._phase_start = self._last_line = self._trial_start = clock()

    def phase(self, phase: Phase, total: int | None = None) -> None:
        """Emit the phase's start line (with its total, if any)."""
        self._phase, self._total = phase, total
        self._phase_start = self._last_line = self.clock()
        counted = f" ({total} {phase.unit})" if total is not None else ""
        self.emit(f"{self.prefix}: {phase.value}{counted}")

    def advance(self, done: int, loss: float | None = None) -> None:
        """Emit a count line when ``interval`` seconds passed since the last line."""
        now = self.clock()
        if self._phase is None or self._total is None or now - self._last_line < self.interval:
            return
        self._last_line = now
        remaining = estimate_remaining(now - self._phase_start, done, self._total)
        share = 100 * done / self._total if self._total else 100.0
        shown_loss = f", loss {loss:.4f}" if loss is not None else ""
        self.emit(f"{self.prefix}: {self._phase.value} {done}/{self._total} "
                  f"{self._phase.unit} ({share:.0f}%){shown_loss}, "
                  f"ETA {format_duration(remaining)}")

    def done(self) -> None:
        """Emit the trial's total time."""
        self.emit(f"{self.prefix}: done in {format_duration(self.clock() - self._trial_start)}")


class RichProgress(TrialObserver):
    """Live bars on a terminal: one row per phase (kept when it ends) with its count and
    ETA (its duration once it ended); the training row shows the loss. Fits 80 columns.

    Args:
        console: where to draw (a stderr console: stdout stays the command's output).
    """

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description:<19}"),
            BarColumn(bar_width=16), TimeRemainingColumn(elapsed_when_finished=True),
            TextColumn("{task.fields[count]}"), console=console)
        self._task: TaskID | None = None  # the running phase's row
        self._total: int | None = None
        self._unit = ""
        self.progress.start()

    def phase(self, phase: Phase, total: int | None = None) -> None:
        """End the running row and start the phase's row."""
        self._finish_row()
        self._total, self._unit = total, phase.unit
        self._task = self.progress.add_task(phase.value, total=total, count=self._count(0))

    def advance(self, done: int, loss: float | None = None) -> None:
        """Move the running row to ``done``."""
        if self._task is None:
            return
        self.progress.update(self._task, completed=done, count=self._count(done, loss))

    def done(self) -> None:
        """End the last row and stop drawing."""
        self._finish_row()
        self.progress.stop()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Stop drawing (idempotent), leaving the rows on the terminal."""
        self.progress.stop()

    def _count(self, done: int, loss: float | None = None) -> str:
        """``12/40 steps, loss 0.6931`` (empty for phases that count nothing)."""
        if self._total is None:
            return ""
        shown_loss = f", loss {loss:.4f}" if loss is not None else ""
        return f"{done}/{self._total} {self._unit}{shown_loss}"

    def _finish_row(self) -> None:
        """Mark the running row complete (its bar full, its duration shown); its count
        stays as the last ``advance`` left it."""
        if self._task is None:
            return
        total = self._total if self._total is not None else 1
        self.progress.update(self._task, total=total, completed=total)
        self.progress.stop_task(self._task)
        self._task = None


def stderr_observer(quiet: bool = False, interval: float = 10.0) -> TrialObserver:
    """The observer of a command-line trial: nothing when ``quiet``, live bars when stderr
    is a terminal, else plain lines on stderr at most every ``interval`` seconds.

    Args:
        quiet: report nothing.
        interval: least seconds between two count lines (plain lines only).

    Returns:
        The observer (use it as a context manager: it closes the live display).
    """
    if quiet:
        return TrialObserver()
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_interactive:
        return RichProgress(console)
    return LineProgress(lambda line: print(line, file=sys.stderr, flush=True), interval)
