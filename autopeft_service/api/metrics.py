"""Prometheus metrics of one server (``GET /metrics``), built with prometheus-client.

Two kinds:

* **Histograms observed in this process**: the worker protocol's latencies (lease,
  heartbeat, report) and the proposer's optimiser time. Under ``autopeft serve
  --processes N`` (N > 1) ``serve`` gives the processes one shared, fresh
  ``PROMETHEUS_MULTIPROC_DIR`` (``shared_metrics_dir``): every process writes its values
  there and a scrape of any process sums them all (prometheus-client's multiprocess mode).
* **Gauges read from the database at scrape time** (``DatabaseCollector``): trials by
  study and state, studies by state, queue depth, workers alive and known. They are exact
  whichever process answers, and cost one grouped query plus one small one per scrape.

Only ids, states and counts are exposed: no token, study name, worker name or
configuration. Each ``ServiceMetrics`` owns its registries (never prometheus-client's
global one), so several apps can run in one process (tests); in multiprocess mode,
though, one process must hold one ``ServiceMetrics`` (the files are per process).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from autopeft_service.domain.study import StudyState, TrialState
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database

#: The environment variable of prometheus-client's multiprocess mode (read by
#: prometheus-client when it is first imported, so it must be set before that).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Request latency buckets (seconds) around the service's 50 ms p99 target: 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
#: Leases also answer after a long poll (up to 60 s): the latency buckets plus 15-60 s.
LEASE_BUCKETS = (*LATENCY_BUCKETS, 15.0, 30.0, 60.0)
#: Optimiser time per proposal: Sobol takes milliseconds, a SAAS-BO fit minutes.
FIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
               1200.0)

LEASE_OUTCOMES = ("leased", "empty", "error")
REPORT_KINDS = ("result", "failure")


class ServiceMetrics:
    """The metrics of one server process and the registry that exposes them.

    Args:
        database: where the scrape-time gauges are read from.
        worker_alive_seconds: a worker seen within this many seconds counts as alive.
        multiprocess_dir: prometheus-client's multiprocess directory when the server runs
            in several processes (``multiprocess_dir()``); None for one process.

    Attributes:
        lease_seconds: time to answer ``POST /v1/leases``, by ``outcome``.
        heartbeat_seconds: time to answer a heartbeat.
        report_seconds: time to answer a report, by ``kind`` (result, failure).
        proposer_fit_seconds: time of the optimiser's ``suggest`` per proposal, by
            ``optimizer``.
        registry: what ``GET /metrics`` renders.
    """

    def __init__(self, database: Database, worker_alive_seconds: float,
                 multiprocess_dir: str | None = None) -> None:
        own = CollectorRegistry()
        self.lease_seconds = Histogram(
            "autopeft_lease_seconds", "Time to answer a lease request: outcome=leased (a "
            "trial, including any wait for one), empty (204 after the long poll), error.",
            ["outcome"], buckets=LEASE_BUCKETS, registry=own)
        self.heartbeat_seconds = Histogram(
            "autopeft_heartbeat_seconds", "Time to answer a trial heartbeat.",
            buckets=LATENCY_BUCKETS, registry=own)
        self.report_seconds = Histogram(
            "autopeft_report_seconds", "Time to answer a trial report, by kind (result, "
            "failure).", ["kind"], buckets=LATENCY_BUCKETS, registry=own)
        self.proposer_fit_seconds = Histogram(
            "autopeft_proposer_fit_seconds", "Time of the optimiser's suggest call (model "
            "fit and acquisition) per proposer pass that proposed for a study.",
            ["optimizer"], buckets=FIT_BUCKETS, registry=own)
        for outcome in LEASE_OUTCOMES:  # series exist (at 0) before the first observation
            self.lease_seconds.labels(outcome=outcome)
        for kind in REPORT_KINDS:
            self.report_seconds.labels(kind=kind)
        if multiprocess_dir is None:
            self.registry = own
        else:  # the histograms are read back from every process's files
            self.registry = CollectorRegistry()
            MultiProcessCollector(  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
                self.registry, path=multiprocess_dir)
        self.registry.register(DatabaseCollector(database, worker_alive_seconds))

    def observe_lease(self, outcome: str, seconds: float) -> None:
        """Record a lease answer.

        Args:
            outcome: one of ``LEASE_OUTCOMES``.
            seconds: time from the request's handler start to its answer.
        """
        self.lease_seconds.labels(outcome=outcome).observe(seconds)

    def observe_fit(self, optimizer: str, seconds: float) -> None:
        """Record one optimiser ``suggest`` call (the proposer's ``fit_observer``).

        Args:
            optimizer: the optimiser's name (``saasbo``, ``sobol``, ...).
            seconds: how long the call took.
        """
        self.proposer_fit_seconds.labels(optimizer=optimizer).observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (serve with ``CONTENT_TYPE_LATEST``).

        Returns:
            The body of a ``GET /metrics`` answer.

        Raises:
            StorageError: the database could not be read (the app answers 503).
        """
        return generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Gauges computed from the database at each scrape.

    Args:
        database: the store.
        worker_alive_seconds: the window of ``autopeft_workers_alive``.
    """

    def __init__(self, database: Database, worker_alive_seconds: float) -> None:
        self.database = database
        self.worker_alive_seconds = worker_alive_seconds

    def describe(self) -> Iterable[Metric]:
        """The families without samples (the registry checks names with them, and never
        queries the database at registration)."""
        return [*_families([], 0, 0), *_tenant_families([])]

    def collect(self) -> Iterable[Metric]:
        """The families, from two queries in one transaction.

        Raises:
            StorageError: the database could not be read.
        """
        with self.database.read_session() as session:
            tallies = repo.study_tallies(session)
            known, alive = repo.worker_counts(session, self.worker_alive_seconds)
            usage = repo.tenant_usage(session)
        return [*_families(tallies, known, alive), *_tenant_families(usage)]


def _tenant_families(usage: list[repo.TenantUsage]) -> list[Metric]:
    """Each tenant's usage and quotas (a quota absent where the tenant has none).

    Args:
        usage: every tenant's usage (``repo.tenant_usage``).

    Returns:
        The metric families, labelled by tenant name and by what is counted.
    """
    used = GaugeMetricFamily("autopeft_tenant_usage", "A tenant's use now: running "
                             "studies, leased trials, ready trials.",
                             labels=["tenant", "resource"])
    quota = GaugeMetricFamily("autopeft_tenant_quota", "A tenant's quota of each resource "
                              "(absent: no limit).", labels=["tenant", "resource"])
    weight = GaugeMetricFamily("autopeft_tenant_weight", "A tenant's weight in the shared "
                               "pool's fair share.", labels=["tenant"])
    for tenant in usage:
        for resource, now, limit in (
                ("running_studies", tenant.running_studies, tenant.max_running_studies),
                ("leased_trials", tenant.leased_trials, tenant.max_parallel_trials),
                ("ready_trials", tenant.ready_trials, tenant.max_queued_trials)):
            used.add_metric([tenant.name, resource], now)
            if limit is not None:
                quota.add_metric([tenant.name, resource], limit)
        weight.add_metric([tenant.name], tenant.weight)
    return [used, quota, weight]


def _families(tallies: list[repo.StudyTally], known: int, alive: int) -> list[Metric]:
    """The database gauges for these study tallies and worker counts.

    Args:
        tallies: every study with its trial counts (``repo.study_tallies``).
        known: workers ever seen.
        alive: workers seen within the alive window.

    Returns:
        The metric families, each with its HELP text.
    """
    trials = GaugeMetricFamily("autopeft_trials", "Trials of each study by state (every "
                               "state, 0 when none).", labels=["study", "state"])
    studies = GaugeMetricFamily("autopeft_studies", "Studies by state.", labels=["state"])
    queued = GaugeMetricFamily("autopeft_queue_depth", "Trials queued for workers (state "
                               "ready, not leased), all studies.")
    per_study = GaugeMetricFamily("autopeft_study_queue_depth", "Trials queued for workers "
                                  "(state ready), per running study.", labels=["study"])
    by_state = {state.value: 0 for state in StudyState}
    for tally in tallies:
        by_state[tally.state] = by_state.get(tally.state, 0) + 1
        for trial_state in TrialState:
            trials.add_metric([str(tally.study_id), trial_state.value],
                              tally.trials[trial_state.value])
        if tally.state == StudyState.RUNNING.value:
            per_study.add_metric([str(tally.study_id)], tally.trials[TrialState.READY.value])
    for state, count in by_state.items():
        studies.add_metric([state], count)
    queued.add_metric([], sum(t.trials[TrialState.READY.value] for t in tallies))
    workers_alive = GaugeMetricFamily(
        "autopeft_workers_alive", "Workers seen (lease request or heartbeat) within the "
        "server's worker_alive_seconds.")
    workers_alive.add_metric([], alive)
    workers_known = GaugeMetricFamily("autopeft_workers_known", "Workers ever seen.")
    workers_known.add_metric([], known)
    return [trials, studies, queued, per_study, workers_alive, workers_known]


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when this process runs in that mode
    (``PROMETHEUS_MULTIPROC_DIR`` is set), else None."""
    return os.environ.get(MULTIPROC_ENV) or None


@contextmanager
def shared_metrics_dir(processes: int) -> Iterator[str | None]:
    """For ``processes`` > 1 server processes, a fresh temporary ``PROMETHEUS_MULTIPROC_DIR``
    in this process's environment (the server processes it starts inherit it), removed at
    exit. One process, or a directory already set in the environment (then used as it is,
    and kept: empty it before each start), changes nothing.

    Args:
        processes: how many server processes will run.

    Yields:
        The directory in use, or None (single-process mode).
    """
    given = multiprocess_dir()
    if processes <= 1 or given is not None:
        yield given
        return
    path = tempfile.mkdtemp(prefix="autopeft-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
