"""The fair-share benchmark (benchmarks/fair_share.py) against a real server thread: the
starvation count finds the small tenant's trial at once, and the saturated share splits
the leases by weight."""

from __future__ import annotations

from pathlib import Path

import httpx

from autopeft_service.testing.server import ServerThread, fast_settings
from tests.benchmarks.conftest import load_benchmark

fs = load_benchmark("fair_share")


def test_starvation_and_saturated_share_measure_the_fair_share(database_url: str,
                                                               tmp_path: Path) -> None:
    with ServerThread(fast_settings(database_url, tmp_path / "artifacts")) as server, \
            httpx.Client(base_url=server.base_url, timeout=60) as http:
        tokens = fs.make_tenants(database_url, {"big": 1.0, "small": 1.0})
        measured = fs.starvation(http, tokens, big_trials=60, held=4, rounds=2)
        assert measured["small_trial_lease_positions"] == [1, 1]
        assert measured["leases_timed"] == 6 and measured["lease_ms_p99"] > 0
        weights = {"a": 3.0, "b": 1.0}
        tokens = fs.make_tenants(database_url, weights)
        share = fs.saturated_share(http, server.base_url, tokens, weights, trials=150,
                                   workers=8, seconds=4.0, trial_mean=0.3)
    assert share["leases"] >= 40
    assert 65 <= share["share_percent"]["a"] <= 85  # 3:1 of the leases, about 75 %
