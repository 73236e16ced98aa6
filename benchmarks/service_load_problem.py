"""The load the service-load benchmark offers: the fake workers' result, the operation kinds,
and each simulated worker's timeline of intended sends (``worker_schedule``), drawn in
advance from a seed so that arrivals follow the trial durations, not the server's speed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig

RESULT = {"metric": "accuracy", "objective": 0.8, "held_out": {"accuracy": 0.8},
          "dev": {"accuracy": 0.8}, "dev_score": 0.8, "trainable_parameters": 10,
          "trainable_percent": 1.0, "deployed_parameters": 10, "head_parameters": 2,
          "train_seconds": 0.0, "eval_seconds": 0.0, "load_seconds": 0.0, "steps": 1,
          "train_examples": 1, "examples_per_second": 1.0, "final_loss": 0.1,
          "peak_memory_mb": 0.0, "device": "fake", "seed": 0, "config_description": "fake"}
#: The studies' backbone (the server checks reported parameter counts against it).
DIMS = MINILM_DIMS
CLOSED_LOOP = "closed loop (capacity)"
FLEET = "open-loop fleet"
#: A study keeps at most this many trials ready or running (``Budget.max_parallel``'s
#: bound): a fleet needing more gets several studies (a lease takes the oldest of any).
STUDY_TRIALS = 10_000


def result_for(lease: Mapping[str, Any]) -> dict[str, Any]:
    """A result for ``lease`` whose parameter counts are its configuration's on the
    study's backbone, as a real worker reports them (the server fails a trial whose
    counts differ from its own)."""
    counts = count_parameters(PeftConfig.model_validate(lease["config"]),
                              BackboneDims.model_validate(lease["backbone_dims"]))
    return {**RESULT, "trainable_parameters": counts.trainable,
            "trainable_percent": counts.trainable_percent,
            "deployed_parameters": counts.deployed}


LEASE, HEARTBEAT, REPORT = "lease", "heartbeat", "report"


KINDS = (LEASE, HEARTBEAT, REPORT)


@dataclass(frozen=True)
class Event:
    """One request a simulated worker means to send.

    Attributes:
        at: intended send time, seconds after the fleet's clock started.
        kind: ``lease``, ``heartbeat`` or ``report``.
        trial: index of the trial in the worker's sequence.
    """

    at: float
    kind: str
    trial: int


def heartbeat_offsets(first: float, period: float, duration: float) -> list[float]:
    """A trial's heartbeats, as offsets from its lease: ``first``, ``first + period``, ...,
    each strictly before ``duration`` (the report)."""
    if period <= 0:
        raise ValueError(f"the heartbeat period must be positive, got {period}")
    count = max(0, math.ceil((duration - first) / period))
    return [first + k * period for k in range(count)]


def worker_schedule(rng: random.Random, trial_mean: float, heartbeat_seconds: float,
                    horizon: float) -> list[Event]:
    """One worker's timeline, every intended send before ``horizon``, in order.

    The worker starts at a uniform offset in ``[0, heartbeat_seconds)``; each trial lasts
    an exponential time of mean ``trial_mean``; its heartbeats begin at a uniform offset in
    ``[0, heartbeat_seconds)`` after the lease and repeat every ``heartbeat_seconds`` until
    the report; the next lease is due at the report's time (a real worker leases again at
    once). Nothing here depends on the server: the arrivals are open-loop.
    """
    events: list[Event] = []
    start = rng.uniform(0.0, heartbeat_seconds)
    trial = 0
    while start < horizon:
        duration = rng.expovariate(1.0 / trial_mean)
        first = rng.uniform(0.0, heartbeat_seconds)
        events.append(Event(start, LEASE, trial))
        for offset in heartbeat_offsets(first, heartbeat_seconds, duration):
            if start + offset >= horizon:
                break
            events.append(Event(start + offset, HEARTBEAT, trial))
        end = start + duration
        if end < horizon:
            events.append(Event(end, REPORT, trial))
        start = end
        trial += 1
    return events


def worker_rng(seed: int, index: int) -> random.Random:
    """Worker ``index``'s generator: the same schedule in any process, for one seed."""
    return random.Random(f"fleet:{seed}:{index}")


def fleet_schedules(workers: int, seed: int, trial_mean: float, heartbeat_seconds: float,
                    horizon: float, indices: Sequence[int] | None = None
                    ) -> dict[int, list[Event]]:
    """The schedules of workers ``indices`` (default all), by index."""
    chosen = range(workers) if indices is None else indices
    return {i: worker_schedule(worker_rng(seed, i), trial_mean, heartbeat_seconds, horizon)
            for i in chosen}


def expected_operations_per_second(workers: int, trial_mean: float,
                                   heartbeat_seconds: float) -> float:
    """The fleet's steady offered load: per trial one lease, one report and on average
    ``trial_mean / heartbeat_seconds`` heartbeats (the first one's offset is uniform)."""
    return workers * (2.0 + trial_mean / heartbeat_seconds) / trial_mean


def queue_trials(http: httpx.Client, total: int, tokens: Sequence[str] = (),
                 name: str = "load") -> list[int]:
    """Studies holding ``total`` ready trials in all (Sobol, everything proposed at once,
    at most ``STUDY_TRIALS`` per study); returns their ids once every trial is ready.

    Args:
        http: a client of the server (its own headers when ``tokens`` is empty).
        total: ready trials wanted.
        tokens: members' tokens (several tenants): the studies are split evenly between
            them, at least one each, each created and polled with its tenant's token.
        name: the studies' name prefix (``<name>-<k>``).

    Returns:
        The study ids.

    Raises:
        RuntimeError: the server refused a study.
    """
    made: list[tuple[int, int, dict[str, str] | None]] = []
    left = total
    per_study = min(STUDY_TRIALS, -(-total // max(1, len(tokens))))
    while left > 0:
        size = min(left, per_study)
        left -= size
        spec = {"name": f"{name}-{len(made)}", "backbone": "fake", "task": "synthetic",
                "backbone_dims": DIMS.model_dump(),
                "search_space": {"num_layers": DIMS.num_layers,
                                 "hidden_size": DIMS.hidden_size},
                "optimizer": {"name": "sobol", "seed": len(made)},
                "budget": {"total_trials": size, "initial_trials": size,
                           "max_parallel": size, "max_attempts": 1}}
        headers = ({"Authorization": f"Bearer {tokens[len(made) % len(tokens)]}"}
                   if tokens else None)
        response = http.post("/v1/studies", json=spec, headers=headers)
        if response.status_code != 201:
            raise RuntimeError(f"the study was refused: {response.text}")
        made.append((response.json()["id"], size, headers))
    for study_id, size, headers in made:
        while http.get(f"/v1/studies/{study_id}",
                       headers=headers).json()["counts"]["ready"] < size:
            time.sleep(0.2)
    return [study_id for study_id, _, _ in made]
