"""benchmarks/multi_fidelity.py: the freeze-thaw simulation spends exactly its compute,
continues only within the budget, and the summary's compute-to-reach arithmetic."""

from __future__ import annotations

import pytest

from autopeft_service.domain.fidelity import Fidelity
from tests.benchmarks.conftest import load_benchmark

mf = load_benchmark("multi_fidelity")


def test_asha_fidelity_search_spends_its_budget_and_continues_some() -> None:
    problem = mf.NoisyCurves("lora", seed=0, noise=0.02)
    run = mf.fidelity_search("mf-asha", problem, Fidelity(levels=(1 / 9, 1 / 3, 1.0)),
                             workers=4, budget=3.0, seed=0)
    assert run["compute"][-1] == pytest.approx(3.0, abs=1 / 9 + 1e-9)
    assert run["compute"] == sorted(run["compute"])
    assert run["configurations"] > 3  # cheap looks at more configurations than 3 full ones
    assert 1 <= run["completed"] < run["configurations"]
    assert len(run["hypervolume"]) == len(run["compute"])


def test_noise_is_seeded_per_configuration_and_level() -> None:
    problem = mf.NoisyCurves("lora", seed=1, noise=0.02)
    from autopeft_service.optimizers.base import History
    from autopeft_service.optimizers.sobol import SobolOptimizer

    point = SobolOptimizer(problem.space, seed=0).suggest(1, History())[0].params
    config = problem.config(0, point)
    assert problem.observe(config, 1 / 3) == problem.observe(config, 1 / 3)
    assert problem.observe(config, 1 / 3) != problem.observe(config, 1.0)
    assert abs(problem.observe(config, 1.0) - config.truth) < 0.1


def test_summary_compute_to_reach() -> None:
    def run(arm: str, compute: list[float], hv: list[float]) -> dict:
        return {"arm": arm, "seed": 0, "noise": 0.02, "result": {
            "compute": compute, "hypervolume": hv}}

    summary = mf.summarise([run("saasbo-full", [10, 20, 40], [0.1, 0.3, 0.5]),
                            run("mf-asha", [5, 10, 15, 40], [0.2, 0.5, 0.6, 0.6])])
    rows = summary["noise 0.02"]["arms"]
    assert summary["noise 0.02"]["target_hv"] == 0.5
    assert rows["mf-asha"]["compute_to_reach"] == 10
    assert rows["mf-asha"]["compute_ratio_to_reach"] == pytest.approx(10 / 40)
    assert rows["saasbo-full"]["compute_ratio_to_reach"] == 1.0


def test_the_replay_serves_the_recorded_scores_and_only_its_configurations(tmp_path) -> None:
    """A recorded table (the lora rung table's first 12 rows, a made-up second seed) as the
    problem: levels are its rungs, a level gives the recorded rung score, full training the
    recorded score and a replicate the second seed's; every configuration a search trains
    comes from the table."""
    import csv
    import json
    import shutil

    from tests.benchmarks.conftest import BENCHMARKS

    source = BENCHMARKS / "results" / "real_table_sst2_lora.csv"
    table = tmp_path / source.name
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if r["state"] == "completed"][:12]
        fields = reader.fieldnames
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(source.with_name(source.stem + ".fidelity.json"),
                table.with_name(table.stem + ".fidelity.json"))
    second = {(int(r["part"]), int(r["trial"])): float(r["score"]) - 0.01 for r in rows}
    table.with_name(table.stem + ".seed1.jsonl").write_text("".join(
        json.dumps({"part": p, "trial": t, "seed": 1, "score": s}) + "\n"
        for (p, t), s in second.items()))
    problem = mf.ReplayProblem(table, "lora")
    assert problem.levels == (0.111, 0.333, 0.667, 1.0) and len(problem.pool) == 12
    row = rows[0]
    config = problem.config(0, problem.pool[0])
    assert problem.observe(config, 0.333) == float(row["rung_1_score"])
    assert problem.observe(config, 1.0) == float(row["score"])
    assert problem.observe(config, 1.0, 1) == second[(int(row["part"]), int(row["trial"]))]
    assert config.truth == pytest.approx(float(row["score"]) - 0.005)
    fidelity = Fidelity(levels=problem.levels, eta=3.0)
    recorded = problem.pool
    for arm in ("random-full", "mf-asha"):
        run = mf.fidelity_search(arm, problem, fidelity, workers=2, budget=3.0, seed=1)
        assert run["compute"][-1] <= 3.0 + 1e-9 and run["configurations"] >= 3
    # more compute than the table holds: each recorded configuration once, then nothing
    run = mf.fidelity_search("random-full", problem, fidelity, workers=2, budget=20.0, seed=1)
    assert run["configurations"] == len(recorded) == 12 and run["compute"][-1] == 12.0
