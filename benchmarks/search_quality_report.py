"""The benchmark's summary: median hypervolume curves with quartiles, evaluations to reach
a target, the Markdown table, the plot, and the results file.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from search_quality_methods import METHOD_NAMES
from search_quality_problems import PROBLEM_NAMES

CHECKPOINTS = (20, 50, 100)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q1, median, q3 = np.quantile(np.asarray(values), [0.25, 0.5, 0.75])
    return float(q1), float(median), float(q3)


def median_curve(runs: Sequence[dict[str, Any]]) -> np.ndarray:
    length = min(len(r["hypervolume"]) for r in runs)
    return np.median(np.array([r["hypervolume"][:length] for r in runs]), axis=0)


def evaluations_to_reach(curve: np.ndarray, target: float) -> int | None:
    """First evaluation count at which ``curve`` reaches ``target`` (None: never)."""
    hits = np.nonzero(curve >= target - 1e-12)[0]
    return int(hits[0]) + 1 if len(hits) else None


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (problem, method): quartiles at the checkpoints, and evaluations needed
    to reach the median hypervolume of ``random`` at its last evaluation."""
    rows = []
    problems = sorted({r["problem"] for r in runs})
    for problem in problems:
        by_method = {m: [r for r in runs if r["problem"] == problem and r["method"] == m]
                     for m in METHOD_NAMES}
        random_runs = by_method.get("random") or []
        random_curve = median_curve(random_runs) if random_runs else None
        target = float(random_curve[-1]) if random_curve is not None else None
        for method, group in by_method.items():
            if not group:
                continue
            row: dict[str, Any] = {"problem": problem, "method": method, "seeds": len(group),
                                   "invalid": sum(r["invalid"] for r in group),
                                   "repeated": sum(r["repeated"] for r in group),
                                   "seconds_per_run": statistics.median(r["seconds"] for r in group)}
            for k in CHECKPOINTS:
                values = [r["hypervolume"][k - 1] for r in group if len(r["hypervolume"]) >= k]
                if len(values) == len(group):
                    row[f"hv{k}"] = quartiles(values)
            if target is not None:
                row["random_target"] = target
                row["random_evaluations"] = len(random_curve)
                row["evals_to_random_final"] = evaluations_to_reach(median_curve(group), target)
            rows.append(row)
    return rows


def print_summary(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the summary (also returned): a column per checkpoint that some
    row reached."""
    checkpoints = [k for k in CHECKPOINTS if any(f"hv{k}" in row for row in rows)]
    finals = {row["random_evaluations"] for row in rows if "random_evaluations" in row}
    final = f"HV@{finals.pop()}" if len(finals) == 1 else "final HV"
    lines = ["| problem | method | seeds | "
             + "".join(f"HV@{k} median [IQR] | " for k in checkpoints)
             + f"evals to random's {final} | invalid / repeated | s per run |",
             "|---|---|---:|" + "---:|" * len(checkpoints) + "---:|---:|---:|"]

    def cell(row: dict[str, Any], k: int) -> str:
        if f"hv{k}" not in row:
            return "–"
        q1, median, q3 = row[f"hv{k}"]
        return f"{median:.4f} [{q1:.4f}, {q3:.4f}]"

    for row in rows:
        reach = row.get("evals_to_random_final")
        lines.append(
            f"| {row['problem']} | {row['method']} | {row['seeds']} | "
            + "".join(f"{cell(row, k)} | " for k in checkpoints)
            + f"{reach if reach is not None else '> max'} | "
            f"{row['invalid']} / {row['repeated']} | {row['seconds_per_run']:.0f} |")
    text = "\n".join(lines)
    print(text)
    return text


def plot(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """Median hypervolume against evaluations (band: interquartile range), one panel per
    problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(METHOD_NAMES, ("tab:gray", "tab:orange", "tab:blue", "tab:green", "tab:red"),
                       strict=True))
    problems = [p for p in PROBLEM_NAMES if any(r["problem"] == p for r in runs)]
    figure, axes = plt.subplots(1, len(problems), figsize=(5.2 * len(problems), 4.2),
                                squeeze=False)
    for axis, problem in zip(axes[0], problems, strict=True):
        floor = float("inf")
        for method in METHOD_NAMES:
            group = [r for r in runs if r["problem"] == problem and r["method"] == method]
            if not group:
                continue
            length = min(len(r["hypervolume"]) for r in group)
            values = np.array([r["hypervolume"][:length] for r in group])
            x = np.arange(1, length + 1)
            q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
            axis.plot(x, median, label=f"{method} ({len(group)} seeds)", color=colours[method],
                      linewidth=2.2 if method == "saasbo" else 1.4)
            axis.fill_between(x, q1, q3, alpha=0.15, color=colours[method])
            floor = min(floor, float(q1[min(9, length - 1)]))
        # the first few evaluations span most of the range: start the axis at evaluation 10
        axis.set_ylim(bottom=floor - 0.05 * abs(floor))
        axis.set_title(problem)
        axis.set_xlabel("evaluations")
        axis.set_ylabel("hypervolume (median, IQR band)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": [], "surrogate": None, "commands": []}


def save_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(results, indent=1))
    temporary.replace(path)
