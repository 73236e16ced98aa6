"""A fake worker: speaks the real HTTP protocol, computes a synthetic objective instead of
training. A test double kept in the package so tests and benchmarks share it.

The synthetic objective depends on few of the space's dimensions, like the problems SAAS-BO
is built for: only the top third of the layers matter, the serial adapter helps most, the
prefix a little, the parallel adapter not at all; returns diminish with size. The parameter
share is the real analytic share of the configuration on the given backbone dimensions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.protocol import LeaseOut
from autopeft_service.domain.trial import TrialResult
from workers.client import Interrupted, LeaseLost, ServerClient, ServerUnavailable

log = logging.getLogger(__name__)



def synthetic_score(config: PeftConfig) -> float:
    """A deterministic score in (0.5, 0.95) from the configuration (see module docstring)."""
    layers = config.num_layers
    relevant = range(layers - max(1, layers // 3), layers)

    def capacity(sizes: tuple[int, ...]) -> float:
        return sum(math.log2(1 + sizes[i]) for i in relevant)

    serial = capacity(config.serial_adapters[0].sizes) if config.serial_adapters else 0.0
    prefix = capacity(config.prefix.lengths) if config.prefix is not None else 0.0
    gain = 1 - math.exp(-(serial + 0.3 * prefix) / 6.0)
    return 0.5 + 0.45 * gain


def fake_result(lease: LeaseOut, dims: BackboneDims, seconds: float) -> TrialResult:
    """A complete TrialResult for a leased trial, with the synthetic score."""
    counts = count_parameters(lease.config, dims)
    score = synthetic_score(lease.config)
    return TrialResult(
        metric="accuracy", objective=score, held_out={"accuracy": score},
        dev={"accuracy": score - 0.01}, dev_score=score - 0.01,
        trainable_parameters=counts.trainable, trainable_percent=counts.trainable_percent,
        deployed_parameters=counts.deployed, deployed_percent=counts.deployed_percent,
        head_parameters=dims.hidden_size * 2 + 2,
        train_seconds=seconds, eval_seconds=0.0, load_seconds=0.0, steps=1, train_examples=1,
        examples_per_second=1.0, final_loss=0.0, peak_memory_mb=0.0, device="fake",
        seed=lease.seed, config_description=lease.config.describe())


class FakeWorker:
    """Leases trials and reports synthetic results until stopped or out of work.

    Args:
        client: the protocol client.
        dims: backbone dimensions for the parameter share.
        train_seconds: time to "train" each trial (heartbeats sent meanwhile).
        heartbeat_seconds: heartbeat period while training.
        on_lease: called with each lease (tests use it to observe or crash).
    """

    def __init__(self, client: ServerClient, dims: BackboneDims = MINILM_DIMS,
                 train_seconds: float = 0.0, heartbeat_seconds: float = 1.0,
                 on_lease: Callable[[LeaseOut], None] | None = None) -> None:
        self.client = client
        self.dims = dims
        self.train_seconds = train_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.on_lease = on_lease
        self.completed = 0

    def run_one(self, wait_seconds: float = 1.0) -> bool:
        """Lease, fake-train and report one trial. Returns False when nothing was ready."""
        lease = self.client.lease(wait_seconds=wait_seconds)
        if lease is None:
            return False
        if self.on_lease is not None:
            self.on_lease(lease)
        end = time.monotonic() + self.train_seconds
        while (left := end - time.monotonic()) > 0:
            if self.client.stop.wait(min(left, self.heartbeat_seconds)):
                raise Interrupted("stopped while training")
            try:
                if self.client.heartbeat(lease.trial_id, lease.token).stop:
                    return True
            except ServerUnavailable:
                continue  # keep "training"; the report below waits for the server
            except LeaseLost:
                return True
        try:
            answer = self.client.report_result(lease.trial_id, lease.token,
                                               fake_result(lease, self.dims, self.train_seconds))
            if answer.state == "completed":
                self.completed += 1
            else:  # recorded as a failure: counts that differ from the server's (other dims)
                log.warning("trial %s: result recorded as %s: %s", lease.trial_id,
                            answer.state, answer.failure_reason)
        except LeaseLost as error:
            log.info("trial %s: %s", lease.trial_id, error)
        return True

    def run(self, idle_rounds: int = 3, wait_seconds: float = 1.0,
            stop: threading.Event | None = None) -> int:
        """Work until ``idle_rounds`` consecutive empty lease answers (or ``stop``).

        Returns the number of trials this worker completed.
        """
        idle = 0
        stop = stop or self.client.stop
        try:
            while idle < idle_rounds and not stop.is_set():
                idle = 0 if self.run_one(wait_seconds) else idle + 1
        except Interrupted:
            pass
        return self.completed


def main() -> None:
    """``python -m workers.fake_worker --server URL --token T [--train-seconds S]``."""
    import argparse
    import socket

    parser = argparse.ArgumentParser(description="fake worker (synthetic objective)")
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--name", default=f"fake@{socket.gethostname()}")
    parser.add_argument("--train-seconds", type=float, default=0.0)
    parser.add_argument("--heartbeat-seconds", type=float, default=1.0)
    parser.add_argument("--idle-rounds", type=int, default=1_000_000)
    args = parser.parse_args()
    with ServerClient(args.server, args.token, args.name) as client:
        worker = FakeWorker(client, train_seconds=args.train_seconds,
                            heartbeat_seconds=args.heartbeat_seconds)
        worker.run(idle_rounds=args.idle_rounds)
    print(worker.completed)


if __name__ == "__main__":
    main()
