"""The search methods the benchmark compares: random (Sobol), SAASBO, Ax's default and
Optuna's NSGA-II and TPE, behind one ``Method`` protocol (``make_method`` by name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from search_quality_problems import Problem
from synthetic_problem import (
    Point,
    ServiceOptimizer,
    quiet_libraries,
)

from autopeft_service.domain.spaces import ParameterKind, SearchSpaceBase
from autopeft_service.optimizers.base import Observation, point_key
from autopeft_service.optimizers.saasbo import SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

BATCH = 4
INITIAL = 10
METHOD_NAMES = ("random", "saasbo", "ax-default", "optuna-nsga2", "optuna-tpe")
#: Bumped when a method's formulation changes; runs of an older version are re-run.
VERSIONS = {"ax-default": 2}


class Method(Protocol):
    name: str

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        ...


def index_parameters(space: SearchSpaceBase) -> tuple[list[str], list[str]]:
    """(binary and ordinal names, categorical names) of a space."""
    ordered = [p.name for p in space.parameters() if p.kind is not ParameterKind.CATEGORICAL]
    return ordered, [p.name for p in space.parameters() if p.kind is ParameterKind.CATEGORICAL]


def linear_constraints(space: SearchSpaceBase) -> list[str]:
    """The part of a space's validity rule that is linear in the choice indices of its
    binary and ordinal parameters, as Ax parameter constraints.

    * ``autopeft``: a layer on; a module size above 0 (the whole rule).
    * ``lora``: a target on; a rank above 0 (the whole rule).
    * ``unified``: a layer on (not: a function at one position, a categorical).
    * ``design_space``: a group tuned (not: only groups below ``groups`` count, a strategy
      in each tuned group, a budget large enough for a module).
    """
    names = [p.name for p in space.parameters()]

    def at_least_one(chosen: Sequence[str]) -> str:
        return " + ".join(chosen) + " >= 1"

    if space.kind == "autopeft":
        flags = [p.name for p in space.parameters() if list(p.values) == [0, 1]]
        return [at_least_one(flags), at_least_one([n for n in names if n not in flags])]
    if space.kind == "lora":
        return [at_least_one([n for n in names if n.startswith("target_")]),
                at_least_one([n for n in names if n == "rank" or n.startswith("rank_")])]
    if space.kind == "unified":
        return [at_least_one([n for n in names if n.startswith("layer_")])]
    if space.kind == "design_space":
        return [at_least_one([n for n in names if n.endswith("_tuned")])]
    return []


class _Pending:
    """What an ask/tell adapter has proposed and not yet been told about, per evaluated
    point (first in, first out), and how much of the loop's history it has read."""

    def __init__(self) -> None:
        self.running: dict[tuple[tuple[str, Any], ...], list[Any]] = {}
        self.completed_read = 0
        self.failed_read = 0

    def add(self, point: Point, handle: Any) -> None:
        self.running.setdefault(point_key(point), []).append(handle)

    def take(self, point: Point) -> Any | None:
        handles = self.running.get(point_key(point))
        return handles.pop(0) if handles else None

    def news(self, completed: Sequence[Observation],
             failed: Sequence[Point]) -> tuple[list[Observation], list[Point]]:
        """The completed and failed entries added since the last call (the loop's lists
        only grow)."""
        new_completed = list(completed[self.completed_read:])
        new_failed = list(failed[self.failed_read:])
        self.completed_read, self.failed_read = len(completed), len(failed)
        return new_completed, new_failed


class AxDefault:
    """Ax's ``Client`` with its default ("fast") generation strategy and a 10-trial start.

    Formulated as a competent Ax user would: each binary or ordinal parameter an integer
    range over its choice indices (ordered, so Ax's GP sees distances), each categorical an
    unordered ``ChoiceParameter``, and the part of the space's validity rule that is linear
    in the integers as parameter constraints (``linear_constraints``; on the AutoPEFT space
    that is the whole rule, so Ax never proposes an invalid configuration there). (Ordered
    *choice* parameters cannot carry constraints: in a first run with them, 84 of Ax's 100
    evaluations on synthetic-15 were the invalid all-zero point, which a failure does not
    teach the model to avoid.)

    Ax's point is put in the space's canonical form (``space.canonical``); a point that is
    still invalid (a rule Ax cannot express) is returned as it is and the loop counts it as
    a failed evaluation, which is reported to Ax as a failed trial.

    Stateful like a user's Ax loop: each call attaches what changed since the last one
    (results of its earlier proposals, failures) and asks for ``n`` more; pending points are
    Ax trials still running.
    """

    name = "ax-default"

    def __init__(self, problem: Problem, seed: int, initial: int = INITIAL) -> None:
        from ax.api.client import Client
        from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig

        quiet_libraries()
        self.space = problem.space
        self.parameters = problem.space.parameters()
        self.client = Client(random_seed=seed)
        self.client.configure_experiment(
            parameters=[
                ChoiceParameterConfig(name=p.name, values=[str(v) for v in p.values],
                                      parameter_type="str", is_ordered=False)
                if p.kind is ParameterKind.CATEGORICAL else
                RangeParameterConfig(name=p.name, bounds=(0, len(p.values) - 1),
                                     parameter_type="int")
                for p in self.parameters],
            parameter_constraints=linear_constraints(problem.space))
        score, share = problem.reference
        self.client.configure_optimization(
            objective="score, -param_share",
            outcome_constraints=[f"score >= {score}", f"param_share <= {share}"])
        self.client.configure_generation_strategy(
            initialization_budget=initial, initialization_random_seed=seed)
        quiet_libraries()
        self.pending = _Pending()

    def to_point(self, parameters: dict[str, Any]) -> Point:
        """The space point of Ax's parameters, in canonical form (maybe invalid)."""
        point: dict[str, Any] = {}
        for p in self.parameters:
            value = parameters[p.name]
            if p.kind is ParameterKind.CATEGORICAL:
                point[p.name] = next(v for v in p.values if str(v) == value)
            else:
                point[p.name] = p.values[round(value)]
        return self.space.canonical(point)

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        new_completed, new_failed = self.pending.news(completed, failed)
        for observation in new_completed:
            index = self.pending.take(observation.params)
            if index is not None:
                self.client.complete_trial(index, raw_data={
                    "score": observation.score, "param_share": observation.param_share})
        for point in new_failed:
            index = self.pending.take(point)
            if index is not None:
                self.client.mark_trial_failed(index)
        out = []
        for index, parameters in self.client.get_next_trials(max_trials=n).items():
            point = self.to_point(parameters)
            self.pending.add(point, index)
            out.append(point)
        return out


class OptunaMethod:
    """An Optuna sampler in an ask/tell loop; each binary or ordinal parameter an ordered
    integer index, each categorical ``suggest_categorical``.

    The sampled point is put in the space's canonical form; a point still invalid is a
    failed evaluation (told to Optuna as a failed trial). Optuna keeps the values it
    sampled for a trial, so a parameter without effect at that point still has one there.
    """

    def __init__(self, name: str, problem: Problem, sampler: Any) -> None:
        import optuna

        quiet_libraries()
        self.name = name
        self.space = problem.space
        self.parameters = problem.space.parameters()
        self.study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        self.pending = _Pending()

    def sample(self, trial: Any) -> Point:
        point: dict[str, Any] = {}
        for p in self.parameters:
            if p.kind is ParameterKind.CATEGORICAL:
                point[p.name] = trial.suggest_categorical(p.name, list(p.values))
            else:
                point[p.name] = p.values[trial.suggest_int(p.name, 0, len(p.values) - 1)]
        return self.space.canonical(point)

    def propose(self, n: int, completed: Sequence[Observation], pending: Sequence[Point],
                failed: Sequence[Point]) -> list[Point]:
        import optuna

        new_completed, new_failed = self.pending.news(completed, failed)
        for observation in new_completed:
            trial = self.pending.take(observation.params)
            if trial is not None:
                self.study.tell(trial, [observation.score, observation.param_share])
        for point in new_failed:
            trial = self.pending.take(point)
            if trial is not None:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out = []
        for _ in range(n):
            trial = self.study.ask()
            point = self.sample(trial)
            self.pending.add(point, trial)
            out.append(point)
        return out


def make_method(name: str, problem: Problem, seed: int,
                settings: SaasboSettings | None = None, initial: int = INITIAL) -> Method:
    """Method ``name`` on ``problem``; ``settings``: saasbo's (default: its defaults);
    ``initial``: the quasi-random start of saasbo, Ax and TPE (tests make it shorter)."""
    if name == "random":
        return ServiceOptimizer(name, SobolOptimizer(problem.space, seed=seed))
    if name == "saasbo":
        # the exact share function, as the server passes it (optimizers/factory.py)
        return ServiceOptimizer(name, SaasboOptimizer(
            problem.space, seed=seed, initial_trials=initial, reference_point=problem.reference,
            settings=settings or SaasboSettings(), share=problem.share))
    if name == "ax-default":
        return AxDefault(problem, seed, initial)
    import optuna

    if name == "optuna-nsga2":
        return OptunaMethod(name, problem, optuna.samplers.NSGAIISampler(
            population_size=20, seed=seed))
    if name == "optuna-tpe":
        return OptunaMethod(name, problem, optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=initial, constant_liar=True))
    raise ValueError(f"unknown method {name!r}")
