"""The trial runner: build a PEFT configuration on a backbone, train it, and score it.

A trial trains on the task's train split minus a held-out part, scores the held-out part
(the search objective) and the dev split (reported only), and returns a ``TrialResult``.
A request with ``hold_out=False`` (``autopeft retrain``, never the search) trains on the
whole train split instead and scores dev only.
``TrialRunner`` keeps the pristine backbone and the tokenised data in memory, so the next
trial of the same backbone and task only rebuilds the PEFT modules and the head.
Same seed, same data and same hardware give the same result.
Progress for people (phases, steps, examples scored) goes to a ``TrialObserver``
(``workers.progress``); the runner itself draws and logs nothing.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import psutil
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.early_stopping import EarlyStopping, rung_steps
from autopeft_service.domain.errors import ConfigError, ModelError, TrialError
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import (
    RungScore,
    TrainingSettings,
    TrialResult,
    resolve_pooling,
)
from workers.artifact import backbone_identity, save_artifact
from workers.backbone import Backbone, load_backbone
from workers.checkpoint import (
    CheckpointError,
    CheckpointIdentity,
    TrainingState,
    capture_rng,
    load_checkpoint,
    restore_parameters,
    restore_rng,
    save_checkpoint,
)
from workers.data import (
    Example,
    TaskData,
    TaskType,
    TokenizedCache,
    TokenizedSplit,
    compute_metrics,
    holdout_split,
    load_task,
    subsample,
)
from workers.peft import apply_peft, trainable_parameter_count
from workers.progress import Phase, TrialObserver
from workers.task_model import CausalLMModel, TaskModel


@dataclass(frozen=True)
class TrialRequest:
    """Everything a trial needs.

    Attributes:
        model: backbone folder or hub name.
        task: task string (``glue:rte``, ``synthetic``, ``csv:DIR``, ...; see workers.data).
        config: the PEFT configuration to build.
        settings: training and evaluation settings.
        seed: seed of initialisation, dropout and batch order.
        data_dir: folder of GLUE task folders (for ``glue:`` tasks).
        task_options: extra ``load_task`` keywords (text_columns, label_column, task_type).
        expected_dims: the study's backbone dimensions; a loaded backbone that differs
            fails the trial (``ModelError``) before training.
        hold_out: True (every search trial): train on the train split minus a held-out part
            (``settings.held_out_fraction``) and score both it and dev. False (re-training a
            chosen configuration, ``autopeft retrain``): train on the whole train split
            (``settings.max_train_examples`` still subsamples it; the held-out settings are
            ignored) and score dev only; the result's ``held_out`` is then empty and its
            ``objective`` is the dev score, so such a result must never be reported to a
            study as a search trial.
        fidelity: the fraction of the full training budget to train to, in (0, 1]. The full
            budget is ``ceil(epochs * batches_per_epoch)`` steps (``training_steps``); the LR
            schedule (warm-up, then linear decay) always spans all of it, and the run stops
            after ``stop_step(fidelity, total)`` = ``max(1, round(fidelity * total))`` steps,
            so a run continued from a lower fidelity follows one uninterrupted run's schedule.
        resume_from: a checkpoint folder (``workers.checkpoint``) written by an earlier run of
            the same model, task, configuration, settings, seed and ``hold_out`` at a lower
            fidelity; the run loads it and trains on from its step. ``ConfigError`` names what
            differs, a damaged checkpoint, or a checkpoint not below the new stop step.
    """

    model: str | Path
    task: str
    config: PeftConfig
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    seed: int = 0
    data_dir: str | Path | None = None
    task_options: dict[str, object] = field(default_factory=dict)
    hold_out: bool = True
    expected_dims: BackboneDims | None = None
    fidelity: float = 1.0
    resume_from: str | Path | None = None

    def __post_init__(self) -> None:
        fidelity = self.fidelity
        if (isinstance(fidelity, bool) or not isinstance(fidelity, int | float)
                or not math.isfinite(fidelity) or not 0 < fidelity <= 1):
            raise ConfigError(f"fidelity: must be a fraction of the training budget in (0, 1], "
                              f"got {fidelity!r}")


def training_steps(examples: int, settings: TrainingSettings) -> int:
    """Steps of the full training budget: ``ceil(epochs * batches_per_epoch)``, at least 1."""
    return max(1, math.ceil(settings.epochs * math.ceil(examples / settings.batch_size)))


def stop_step(fidelity: float, total_steps: int) -> int:
    """The step a run at ``fidelity`` stops after: ``max(1, round(fidelity * total_steps))``."""
    return min(total_steps, max(1, round(fidelity * total_steps)))


@dataclass(frozen=True)
class TrialProgress:
    """A training progress report (for heartbeats and progress bars)."""

    step: int
    total_steps: int
    loss: float


class TrialStopped(Exception):
    """Raised inside ``run`` when the progress callback asks to stop."""


ProgressCallback = Callable[[TrialProgress], bool]
#: Called with the examples of a split scored so far (see ``TrialRunner._eval_batches``).
ScoredCallback = Callable[[int], None]
#: Called with each rung score as it is taken; return False to stop the trial there.
RungCallback = Callable[[RungScore], bool]


@dataclass
class _Trained:
    """What ``TrialRunner._train`` ends with: the step it stopped at, the examples this run
    saw, the last loss, and the state a checkpoint keeps."""

    step: int
    new_examples: int
    loss: float
    state: TrainingState


@dataclass
class _PreparedData:
    task: TaskData
    fit: TokenizedSplit
    held_out: TokenizedSplit | None  # None: the request trains on the whole train split
    dev: TokenizedSplit


class TrialRunner:
    """Runs trials, caching loaded backbones and tokenised data between them.

    Args:
        device: torch device string (``"cpu"``, ``"cuda:0"``).
        cache: tokenised-data cache (memory + disk); a default one when omitted.
        attn_implementation: attention kernel of loaded backbones.
    """

    def __init__(self, device: str = "cpu", cache: TokenizedCache | None = None,
                 attn_implementation: str = "sdpa") -> None:
        self.device = torch.device(device)
        self.cache = cache if cache is not None else TokenizedCache()
        self.attn_implementation = attn_implementation
        self._backbones: dict[str, Backbone] = {}
        self._tasks: dict[tuple[object, ...], TaskData] = {}

    def backbone(self, source: str | Path) -> Backbone:
        """The pristine backbone for ``source``, loaded once."""
        key = str(source)
        if key not in self._backbones:
            self._backbones[key] = load_backbone(source, self.attn_implementation)
        return self._backbones[key]

    def task(self, request: TrialRequest) -> TaskData:
        """The task's examples, loaded once per (task, data dir, options)."""
        key = (request.task, str(request.data_dir), tuple(sorted(
            (k, str(v)) for k, v in request.task_options.items())))
        if key not in self._tasks:
            # task_options is the spec's free JSON object; load_task names a bad keyword
            self._tasks[key] = load_task(request.task, request.data_dir,
                                         **request.task_options)  # type: ignore[arg-type]
        return self._tasks[key]

    def splits(self, request: TrialRequest) -> tuple[tuple[Example, ...], tuple[Example, ...],
                                                     tuple[Example, ...]]:
        """The (fit, held-out, dev) examples a request trains and scores on.

        ``settings.data_seed`` picks the held-out part and the subsamples; with
        ``hold_out`` False the held-out part is empty and fit is the whole train split
        (subsampled to ``max_train_examples``). ``run`` trains on exactly these.
        """
        settings = request.settings
        task = self.task(request)
        if request.hold_out:
            fit, held_out = holdout_split(task.train, settings.held_out_fraction,
                                          settings.data_seed, settings.max_held_out_examples)
        else:
            fit, held_out = tuple(task.train), ()
        if settings.max_train_examples is not None:
            fit = subsample(fit, settings.max_train_examples, settings.data_seed)
        dev = tuple(task.dev)
        if settings.max_dev_examples is not None:
            dev = subsample(dev, settings.max_dev_examples, settings.data_seed)
        return tuple(fit), tuple(held_out), dev

    def _prepare(self, request: TrialRequest, backbone: Backbone) -> _PreparedData:
        settings = request.settings
        task = self.task(request)
        fit, held_out, dev = self.splits(request)
        held_key = (f"held={settings.held_out_fraction}/{settings.max_held_out_examples}"
                    if request.hold_out else "held=none")
        split_key = (f"{task.fingerprint}:seed={settings.data_seed}:{held_key}:"
                     f"train={settings.max_train_examples}:dev={settings.max_dev_examples}")

        def tokenize(examples: tuple, name: str) -> TokenizedSplit:
            return self.cache.get(backbone.tokenizer, examples, key=f"{split_key}:{name}",
                                  max_length=settings.max_length, task_type=task.task_type)

        return _PreparedData(task=task, fit=tokenize(fit, "fit"),
                             held_out=tokenize(held_out, "held_out") if request.hold_out else None,
                             dev=tokenize(dev, "dev"))

    def build_encoder(self, backbone: Backbone, config: PeftConfig) -> nn.Module:
        """A copy of the pristine backbone with ``config`` built in (the pristine one stays).

        Benchmarks override this to build the same configuration with another library.
        """
        return apply_peft(copy.deepcopy(backbone.model), config, backbone.dims)

    def run(self, request: TrialRequest, progress: ProgressCallback | None = None,
            progress_every: int = 10, artifact_dir: str | Path | None = None,
            trial_info: dict[str, object] | None = None,
            early_stopping: EarlyStopping | None = None,
            on_rung: RungCallback | None = None,
            observer: TrialObserver | None = None,
            checkpoint_dir: str | Path | None = None) -> TrialResult:
        """Train and score one configuration.

        Args:
            request: what to train.
            progress: called every ``progress_every`` steps; return False to stop the trial.
            progress_every: steps between progress calls.
            early_stopping: the study's rungs: at each (``rung_steps``) the first
                ``rung_examples`` held-out examples are scored (time kept out of
                ``train_seconds``, reported as ``rung_eval_seconds``), the score goes into
                the result's ``rungs`` and to ``on_rung``. Ignored without a held-out split.
            on_rung: called with each rung score; False stops the trial (``TrialStopped``).
            artifact_dir: when given, the trained adapter and head are written there as an
                artefact (``workers.artifact``; the folder is replaced whole).
            trial_info: study and trial ids for the artefact's manifest.
            observer: told each phase as it starts (``workers.progress.Phase``, in order),
                then every training step and every scored batch (rung scoring is part of
                training), and ``done`` at the end; for display only (it cannot stop the
                trial). Its training phase counts this run's steps only (a resumed run's
                from 0).
            checkpoint_dir: when given, once training reaches its stop step (before scoring)
                a checkpoint (``workers.checkpoint``) is written there (replaced whole) for a
                later run at a higher fidelity to resume (``TrialRequest.resume_from``), on
                this worker or another. A trial stopped early (``TrialStopped``) writes none.

        The request's ``fidelity`` sets the stop step; rung steps stay on the full budget,
        and a resumed run scores only the rungs after its checkpoint's step. ``progress``
        gets the absolute step and this run's stop step as its total.

        Returns:
            The trial's result (with ``request.hold_out`` False: ``held_out`` empty and
            ``objective`` equal to ``dev_score``; see ``TrialRequest``). ``steps`` is the
            step training ended at, ``start_step`` the resumed checkpoint's (0 when fresh);
            ``train_seconds`` and ``examples_per_second`` cover the steps after it.

        Raises:
            DataError / ModelError / ConfigError: bad task, model or configuration;
                ``workers.checkpoint.CheckpointError`` (a ConfigError) for a checkpoint that
                cannot be resumed.
            TrialError: the loss became NaN or infinite.
            TrialStopped: ``progress`` asked to stop.
        """
        settings = request.settings
        watch = observer if observer is not None else TrialObserver()
        load_start = time.perf_counter()
        watch.phase(Phase.LOADING_DATA)
        self.task(request)  # bad task arguments fail before the model is loaded
        watch.phase(Phase.LOADING_MODEL)
        backbone = self.backbone(request.model)
        if request.expected_dims is not None and backbone.dims != request.expected_dims:
            raise ModelError(
                f"backbone_dims: the study gives {request.expected_dims.model_dump()}, the "
                f"backbone this worker loaded from {request.model} has "
                f"{backbone.dims.model_dump()}: the parameter share would not be the "
                "server's; fix the study's backbone_dims or the worker's model folder")
        watch.phase(Phase.TOKENISING)
        data = self._prepare(request, backbone)
        total_steps = training_steps(len(data.fit), settings)
        stop = stop_step(request.fidelity, total_steps)
        identity = self._checkpoint_identity(request, backbone, data.task)
        resumed = (None if request.resume_from is None else  # refused before building
                   load_checkpoint(request.resume_from, identity, stop))
        if resumed is not None and resumed.manifest.total_steps != total_steps:
            raise CheckpointError(f"resume_from: the checkpoint's full budget is "
                                  f"{resumed.manifest.total_steps} steps, this trial's "
                                  f"{total_steps}: the training split differs")
        watch.phase(Phase.BUILDING)
        counts = count_parameters(request.config, backbone.dims)  # ConfigError: e.g. BitFit
        torch.manual_seed(request.seed)                          # on a bias-less backbone
        encoder = self.build_encoder(backbone, request.config)
        if settings.gradient_checkpointing:
            # non-reentrant: PEFT modules inside a layer get their gradients recomputed too.
            # (The encoder is a PreTrainedModel, or a peft model forwarding to one.)
            encoder.activation_checkpointing_enable(  # type: ignore[operator]  # torch types it Tensor | Module
                activation_checkpointing_kwargs={"use_reentrant": False})
        is_regression = data.task.task_type is TaskType.REGRESSION
        model = self._task_model(encoder, backbone, data.task, settings).to(self.device)
        if resumed is not None:
            restore_parameters(model, resumed.state.parameters)
        head_parameters = model.head_parameter_count()
        built = trainable_parameter_count(model) - head_parameters
        if built != counts.trainable:  # the exact-count contract; tested, checked every trial
            raise TrialError(f"built model has {built} trainable parameters, analytic count "
                             f"says {counts.trainable}")
        load_seconds = time.perf_counter() - load_start

        memory = _PeakMemory(self.device)
        rungs = _RungScorer(self, model, data, settings, is_regression, early_stopping, on_rung)
        train_start = time.perf_counter()
        trained = self._train(
            model, data.fit, settings, request.seed, is_regression, progress, progress_every,
            memory, rungs, watch, stop=stop, resume=None if resumed is None else resumed.state)
        train_seconds = time.perf_counter() - train_start - rungs.seconds
        steps, examples_seen, final_loss = trained.step, trained.new_examples, trained.loss
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, identity, trained.state, request.fidelity,
                            trial_info)

        eval_start = time.perf_counter()
        held_out = ({} if data.held_out is None else
                    self._score(model, data.held_out, data.task, settings, is_regression,
                                Phase.SCORING_HELD_OUT, watch))
        dev = self._score(model, data.dev, data.task, settings, is_regression,
                          Phase.SCORING_DEV, watch)
        eval_seconds = time.perf_counter() - eval_start
        memory.sample()

        metric = data.task.metrics[0]
        result = TrialResult(
            metric=metric, objective=held_out[metric] if held_out else dev[metric],
            held_out=held_out, dev=dev,
            dev_score=dev[metric], trainable_parameters=counts.trainable,
            trainable_percent=counts.trainable_percent, deployed_parameters=counts.deployed,
            deployed_percent=counts.deployed_percent,
            head_parameters=head_parameters, train_seconds=train_seconds,
            eval_seconds=eval_seconds, load_seconds=load_seconds, steps=steps,
            train_examples=len(data.fit),
            examples_per_second=examples_seen / max(train_seconds, 1e-9),
            final_loss=final_loss, peak_memory_mb=memory.peak_mb, device=str(self.device),
            seed=request.seed, config_description=request.config.describe(),
            rungs=rungs.scores, rung_eval_seconds=rungs.seconds, fidelity=request.fidelity,
            start_step=0 if resumed is None else resumed.state.step)
        if artifact_dir is not None:
            watch.phase(Phase.SAVING)
            save_artifact(artifact_dir, model, backbone, request.config, data.task, settings,
                          result, trial_info)
        watch.done()
        return result

    @staticmethod
    def _task_model(encoder: nn.Module, backbone: Backbone, task: TaskData,
                    settings: TrainingSettings) -> TaskModel | CausalLMModel:
        """The trained model: a pooled linear head, or a decoder's own LM head.

        Raises:
            ModelError: a causal-LM task on an encoder.
        """
        if task.task_type is TaskType.CAUSAL_LM:
            if backbone.lm_head is None:
                raise ModelError(f"task {task.name}: a causal-LM task needs a decoder "
                                 f"backbone; {backbone.source} is a "
                                 f"{backbone.dims.model_type} encoder")
            return CausalLMModel(encoder, _lm_head_for(encoder, backbone))
        return TaskModel(encoder, backbone.dims.hidden_size, task.num_labels,  # 1: regression
                         resolve_pooling(settings.pooling, backbone.dims.is_decoder),
                         settings.head_dropout)

    @staticmethod
    def _checkpoint_identity(request: TrialRequest, backbone: Backbone,
                             task: TaskData) -> CheckpointIdentity:
        """What a checkpoint of ``request`` must match to be resumed by it."""
        return CheckpointIdentity(
            backbone_dims=backbone.dims,
            backbone_config_sha256=backbone_identity(backbone).config_sha256,
            task_fingerprint=task.fingerprint, hold_out=request.hold_out,
            config=request.config, settings=request.settings, seed=request.seed)

    def _train(self, model: TaskModel | CausalLMModel, data: TokenizedSplit, settings: TrainingSettings,
               seed: int, is_regression: bool, progress: ProgressCallback | None,
               progress_every: int, memory: _PeakMemory,
               rungs: _RungScorer | None = None,
               observer: TrialObserver | None = None, stop: int | None = None,
               resume: TrainingState | None = None) -> _Trained:
        """Train in place from step 0 (or ``resume``'s step) to ``stop`` (default: the full
        budget, ``training_steps``); the LR schedule spans the full budget whatever ``stop``.

        Batches: each epoch draws a permutation from a generator seeded with ``seed``; the
        state of that generator at the start of the current epoch and the batches of the
        epoch already trained are the data position a checkpoint keeps. ``resume`` puts
        back the optimiser, scheduler, random states and data position (its parameters are
        already in ``model``), so training goes on exactly as it would have without a stop.
        ``observer`` gets the training phase with this run's steps, then every step.
        """
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        parameters = [p for _, p in named]
        if not parameters:  # a causal-LM task has no new head: only PEFT modules train
            raise ConfigError("nothing to train: the configuration has no PEFT module and a "
                              "causal-LM task trains no head; add a module")
        optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate,
                                      weight_decay=settings.weight_decay)
        batches_per_epoch = math.ceil(len(data) / settings.batch_size)
        if not batches_per_epoch:
            raise TrialError("the training split has no example")
        total_steps = training_steps(len(data), settings)
        stop = total_steps if stop is None else stop
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(settings.warmup_ratio * total_steps), total_steps)
        generator = torch.Generator().manual_seed(seed)
        step, offset, seen_before = 0, 0, 0
        if resume is not None:
            optimizer.load_state_dict(resume.optimizer)
            scheduler.load_state_dict(resume.scheduler)
            generator.set_state(resume.epoch_generator)
            restore_rng(resume.rng)
            step, offset, seen_before = resume.step, resume.epoch_offset, resume.examples_seen
        start_step = step
        loss_fn: nn.Module = nn.MSELoss() if is_regression else nn.CrossEntropyLoss()
        watch = observer if observer is not None else TrialObserver()
        watch.phase(Phase.TRAINING, stop - start_step)
        model.train()
        seen, loss_value = 0, float("nan")
        epoch_state = generator.get_state()
        while step < stop:
            epoch_state = generator.get_state()
            order = torch.randperm(len(data), generator=generator)
            while offset < batches_per_epoch and step < stop:
                start = offset * settings.batch_size
                batch = self._to_device(data.batch(order[start:start + settings.batch_size]))
                seen += len(batch["labels"])
                if isinstance(model, CausalLMModel):
                    loss = model(**batch)
                else:
                    labels = batch.pop("labels")
                    output = model(**batch)
                    loss = loss_fn(output.squeeze(-1) if is_regression else output, labels)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise TrialError(f"loss became {loss_value} at step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                offset += 1
                memory.sample()
                watch.advance(step - start_step, loss_value)
                if progress is not None and (step % progress_every == 0 or step == stop):
                    if not progress(TrialProgress(step, stop, loss_value)):
                        raise TrialStopped(f"stopped at step {step} of {stop}")
                if rungs is not None and not rungs.after_step(step, total_steps):
                    raise TrialStopped(f"stopped at rung (step {step} of {stop})")
            if step < stop:
                offset = 0
        # the position stays in the epoch it stopped in (offset may equal batches_per_epoch:
        # a resumed run then replays that epoch's permutation and starts the next one)
        state = TrainingState(
            step=step, total_steps=total_steps, examples_seen=seen_before + seen,
            parameters={name: p.detach() for name, p in named},
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            rng=capture_rng(), epoch_generator=epoch_state, epoch_offset=offset)
        return _Trained(step=step, new_examples=seen, loss=loss_value, state=state)

    def _score(self, model: TaskModel | CausalLMModel, data: TokenizedSplit, task: TaskData,
               settings: TrainingSettings, is_regression: bool, phase: Phase,
               observer: TrialObserver) -> dict[str, float]:
        """``_evaluate`` as the scoring ``phase``: ``observer`` gets the phase with the
        split's size, then the examples scored after every batch."""
        observer.phase(phase, len(data))
        return self._evaluate(model, data, task, settings, is_regression, observer.advance)

    def _evaluate(self, model: TaskModel | CausalLMModel, data: TokenizedSplit, task: TaskData,
                  settings: TrainingSettings, is_regression: bool,
                  on_scored: ScoredCallback | None = None) -> dict[str, float]:
        """The task's metrics of ``model`` on ``data``; ``on_scored`` as in ``_eval_batches``."""
        if isinstance(model, CausalLMModel):
            return self.language_model_metrics(model, data, settings, on_scored)
        predictions = self.predict(model, data, settings, is_regression, on_scored)
        return compute_metrics(task.metrics, predictions.numpy(), data.labels.numpy())

    @torch.no_grad()
    def predict(self, model: TaskModel, data: TokenizedSplit, settings: TrainingSettings,
                is_regression: bool, on_scored: ScoredCallback | None = None) -> torch.Tensor:
        """Class indices (or values) of ``model`` on ``data``, in batches of
        ``settings.eval_batch_size`` (what scoring uses; ``workers.artifact`` does the same);
        ``on_scored`` as in ``_eval_batches``."""
        model.eval()
        predictions = []
        for batch in self._eval_batches(data, settings, on_scored):
            batch.pop("labels")
            output = model(**batch).float().cpu()
            predictions.append(output.squeeze(-1) if is_regression else output.argmax(-1))
        model.train()
        return torch.cat(predictions)

    @torch.no_grad()
    def language_model_metrics(self, model: CausalLMModel, data: TokenizedSplit,
                               settings: TrainingSettings,
                               on_scored: ScoredCallback | None = None) -> dict[str, float]:
        """Mean log-likelihood per response token over ``data`` (every token weighs the
        same) and the perplexity, exp(-log-likelihood); ``on_scored`` as in
        ``_eval_batches``."""
        model.eval()
        total, tokens = 0.0, 0
        for batch in self._eval_batches(data, settings, on_scored):
            log_likelihoods = model.token_log_likelihoods(**batch)
            total += float(log_likelihoods.double().sum())
            tokens += log_likelihoods.numel()
        model.train()
        if not tokens:
            raise TrialError("the split has no response token to score")
        log_likelihood = total / tokens
        return {"log_likelihood": log_likelihood, "perplexity": math.exp(-log_likelihood)}

    def _eval_batches(self, data: TokenizedSplit, settings: TrainingSettings,
                      on_scored: ScoredCallback | None = None
                      ) -> Iterator[dict[str, torch.Tensor]]:
        """``data`` in order, in batches of ``settings.eval_batch_size``, on the device.

        Args:
            data: the split to score.
            settings: gives the batch size.
            on_scored: called once the caller is done with a batch (when it asks for the
                next one, or the loop ends) with the examples scored so far; the last call
                gets ``len(data)``.

        Returns:
            An iterator of device batches (labels included).
        """
        for start in range(0, len(data), settings.eval_batch_size):
            end = min(start + settings.eval_batch_size, len(data))
            yield self._to_device(data.batch(torch.arange(start, end)))
            if on_scored is not None:
                on_scored(end)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}


def _lm_head_for(encoder: nn.Module, backbone: Backbone) -> nn.Module:
    """The LM head of a copied decoder: tied to the copy's input embeddings where the
    pristine model ties them (so that full fine-tuning keeps them tied), else the pristine,
    frozen head itself."""
    assert backbone.lm_head is not None
    # get_input_embeddings is annotated nn.Module, so .weight reads as Tensor | Module: the
    # input embeddings of every supported decoder are an nn.Embedding, .weight a Parameter
    pristine_embeddings = cast(torch.Tensor, backbone.model.get_input_embeddings().weight)
    if backbone.lm_head.weight is not pristine_embeddings:
        return backbone.lm_head
    # on the meta device: no vocabulary-sized random weight drawn only to be replaced
    head = nn.Linear(backbone.dims.hidden_size, pristine_embeddings.shape[0], bias=False,
                     device="meta")
    # the copy is a PreTrainedModel (or a peft model forwarding to one)
    head.weight = encoder.get_input_embeddings().weight  # type: ignore[operator]  # torch types it Tensor | Module
    return head


class _RungScorer:
    """Scores a trial's rungs during training (``TrialRunner.run``'s ``early_stopping``)."""

    def __init__(self, runner: TrialRunner, model: TaskModel | CausalLMModel,
                 data: _PreparedData, settings: TrainingSettings, is_regression: bool,
                 early_stopping: EarlyStopping | None, on_rung: RungCallback | None) -> None:
        self.runner = runner
        self.model = model
        self.data = data
        self.settings = settings
        self.is_regression = is_regression
        self.on_rung = on_rung
        self.fractions = early_stopping.rungs if early_stopping is not None else ()
        self.examples = early_stopping.rung_examples if early_stopping is not None else 0
        self.scores: list[RungScore] = []
        self.seconds = 0.0
        self._at_step: dict[int, list[int]] | None = None
        self._split: TokenizedSplit | None = None
        if data.held_out is None or not len(data.held_out):
            self.fractions = ()

    def after_step(self, step: int, total_steps: int) -> bool:
        """Score every rung that falls on ``step``; False when ``on_rung`` said stop."""
        if not self.fractions:
            return True
        if self._at_step is None:
            self._at_step = {}
            for rung, at in enumerate(rung_steps(self.fractions, total_steps)):
                if at:
                    self._at_step.setdefault(at, []).append(rung)
        for rung in self._at_step.get(step, ()):
            start = time.perf_counter()
            split = self._rung_split()
            metrics = self.runner._evaluate(self.model, split, self.data.task, self.settings,
                                            self.is_regression)
            took = time.perf_counter() - start
            self.seconds += took
            score = RungScore(rung=rung, step=step, score=metrics[self.data.task.metrics[0]],
                              examples=len(split), eval_seconds=took)
            self.scores.append(score)
            if self.on_rung is not None and not self.on_rung(score):
                return False
        return True

    def _rung_split(self) -> TokenizedSplit:
        """The first ``examples`` held-out examples (the same for every trial)."""
        if self._split is None:
            held_out = self.data.held_out
            assert held_out is not None
            count = min(self.examples, len(held_out))
            self._split = TokenizedSplit(
                input_ids=held_out.input_ids[:count],
                attention_mask=held_out.attention_mask[:count],
                token_type_ids=None if held_out.token_type_ids is None
                else held_out.token_type_ids[:count],
                labels=held_out.labels[:count], lengths=held_out.lengths[:count])
        return self._split


class _PeakMemory:
    """Peak memory during a trial: CUDA allocator peak on GPU, sampled process RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._process = psutil.Process()
        self._peak = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        if self.device.type != "cuda":
            self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self._peak / 2**20


def run_trial(request: TrialRequest, device: str = "cpu") -> TrialResult:
    """Run one trial with a fresh runner (see ``TrialRunner.run``)."""
    return TrialRunner(device=device).run(request)
