"""Warm start's service side (``autopeft_service/warm_start.py``): the sources' completed
trials as the model's observations, mapped to the study's space."""

from __future__ import annotations

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.spaces import space_for_backbone
from autopeft_service.domain.warm_start import SourceTrial
from autopeft_service.optimizers.base import History
from autopeft_service.optimizers.sobol import SobolOptimizer
from autopeft_service.storage.repository.transfer import SourceStudy
from autopeft_service.warm_start import transfer_observations


def test_every_source_trial_becomes_an_observation_at_its_mapped_point() -> None:
    shallow = space_for_backbone("lora", MINILM_DIMS, granularity="layer")
    deep = space_for_backbone("lora", MINILM_DIMS.model_copy(update={"num_layers": 12}),
                              granularity="layer")
    points = [s.params for s in SobolOptimizer(shallow, seed=0).suggest(3, History())]
    trials = [SourceTrial(4, n, dict(p), 0.5 + n / 10, 0.1) for n, p in enumerate(points)]
    trials.append(SourceTrial(4, 3, dict(points[0]), 0.9, 0.1))  # the same point again
    observations = transfer_observations([SourceStudy(4, shallow, trials)], deep)
    assert [(o.source, o.number, o.score) for o in observations] == [
        (4, 0, 0.5), (4, 1, 0.6), (4, 2, 0.7), (4, 3, 0.9)]  # duplicates stay: two scores
    for observation, trial in zip(observations, trials, strict=True):
        assert observation.params == deep.transfer_point(trial.params, shallow)
        assert deep.is_valid(observation.params)
