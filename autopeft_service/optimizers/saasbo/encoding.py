"""Points of any search space <-> index vectors <-> the model's inputs in [0, 1]^D.

An index vector holds, per parameter, the position of its value in the parameter's choice
list; the local search moves on index vectors. The model's input has, per parameter:

* binary and ordinal: one column, the index divided by (choices - 1), so the GP sees the
  order (a bottleneck of 48 lies between 24 and 96);
* categorical: one column per category, one-hot. An index column would invent an order
  and distances among unordered names (``serial_adapter`` closer to ``lora`` than to
  ``parallel_adapter`` only because of where they are listed); one-hot keeps every pair
  of categories equally far apart, and the SAAS prior can still switch off the columns
  that do not matter. The cost is a wider input (e.g. the unified space: 14 parameters,
  21 columns), which counts against ``MAX_DIMENSION``.

Validity and neighbours come from the space (``domain.spaces``): a drawn or moved index
vector is put in the space's canonical form and kept only when valid, so the optimiser
never proposes a point the space would refuse. Results of the space's Python checks are
memoised per index vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from autopeft_service.domain.spaces import ParameterKind, ParamValue, SearchSpaceBase
from autopeft_service.optimizers.base import OptimizerError, Point

IndexKey = tuple[int, ...]


def _keys(index: Tensor) -> list[IndexKey]:
    return [tuple(row) for row in index.tolist()]


class Encoding:
    """The encodings of one space's points (module docstring)."""

    def __init__(self, space: SearchSpaceBase) -> None:
        self.space = space
        self.parameters = space.parameters()
        self.names = [p.name for p in self.parameters]
        self.cardinalities = torch.tensor([len(p.values) for p in self.parameters])
        self._position = [{_hashable(v): i for i, v in enumerate(p.values)}
                          for p in self.parameters]
        self.categorical = [p.kind is ParameterKind.CATEGORICAL for p in self.parameters]
        # Model columns: start column of each parameter and its width (1, or categories).
        widths = [len(p.values) if cat else 1
                  for p, cat in zip(self.parameters, self.categorical, strict=True)]
        self.columns = [sum(widths[:j]) for j in range(len(widths))]
        self.widths = widths
        self.model_dimension = sum(widths)
        self._valid: dict[IndexKey, IndexKey | None] = {}

    @property
    def dimension(self) -> int:
        """Parameters (the length of an index vector)."""
        return len(self.parameters)

    # -- points and index vectors

    def to_index(self, points: Sequence[Point]) -> Tensor:
        """``len(points) x D`` long tensor of choice positions.

        Raises:
            OptimizerError: a point holds a value outside its parameter's choices.
        """
        try:
            rows = [[self._position[j][_hashable(point[name])]
                     for j, name in enumerate(self.names)] for point in points]
        except KeyError as error:
            raise OptimizerError(f"saasbo: a point of the history is outside the search "
                                 f"space ({error})") from None
        return torch.tensor(rows, dtype=torch.long).view(len(points), self.dimension)

    def to_point(self, index: Tensor | Sequence[int]) -> dict[str, ParamValue]:
        """The point of one index vector, in parameter order."""
        values = index.tolist() if isinstance(index, Tensor) else list(index)
        return {p.name: p.values[int(i)] for p, i in zip(self.parameters, values, strict=True)}

    # -- model inputs

    def to_unit(self, index: Tensor) -> Tensor:
        """Model inputs: ``... x model_dimension`` doubles in [0, 1]."""
        parts = []
        for j, (width, categorical) in enumerate(zip(self.widths, self.categorical,
                                                     strict=True)):
            column = index[..., j]
            if categorical:
                parts.append(torch.nn.functional.one_hot(column, width).to(torch.float64))
            else:
                scale = max(int(self.cardinalities[j]) - 1, 1)
                parts.append((column.to(torch.float64) / scale).unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    def unit_to_index(self, X: Tensor) -> Tensor:
        """Inverse of ``to_unit`` for encoded grid points (rounds away float error)."""
        columns = []
        for j, (start, width, categorical) in enumerate(zip(
                self.columns, self.widths, self.categorical, strict=True)):
            if categorical:
                columns.append(X[..., start:start + width].argmax(-1))
            else:
                scale = max(int(self.cardinalities[j]) - 1, 1)
                columns.append(torch.round(X[..., start] * scale).long().clamp(
                    0, int(self.cardinalities[j]) - 1))
        return torch.stack(columns, dim=-1)

    # -- validity and moves (from the space)

    def canonical_valid(self, key: IndexKey) -> IndexKey | None:
        """The canonical form of an index vector when it is valid, else None (memoised)."""
        if key in self._valid:
            return self._valid[key]
        point = self.space.canonical(self.to_point(key))
        result = None
        if self.space.rule_error(point) is None:
            result = tuple(self._position[j][_hashable(point[name])]
                           for j, name in enumerate(self.names))
        self._valid[key] = result
        return result

    def canonicalise(self, index: Tensor) -> Tensor:
        """The valid rows of ``index`` in canonical form (invalid rows dropped, order kept)."""
        out = [c for c in (self.canonical_valid(k) for k in _keys(index)) if c is not None]
        return torch.tensor(out, dtype=torch.long).view(len(out), self.dimension)

    def valid(self, index: Tensor) -> Tensor:
        """Mask of rows that are valid canonical points."""
        return torch.tensor([self.canonical_valid(k) == k for k in _keys(index)],
                            dtype=torch.bool)

    def random_valid(self, count: int, generator: torch.Generator) -> Tensor:
        """About ``count`` random valid index vectors: uniform draws per parameter, put in
        canonical form (repeats possible)."""
        out: list[Tensor] = []
        have = 0
        for _ in range(100):
            draw = (torch.rand(2 * count + 8, self.dimension, generator=generator)
                    * self.cardinalities).long()
            draw = self.canonicalise(draw)
            out.append(draw)
            have += len(draw)
            if have >= count:
                break
        return torch.cat(out)[:count]

    def neighbours(self, index: Tensor) -> Tensor:
        """All one-step neighbours of ``k x D`` index vectors, valid and canonical, possibly
        repeated: flip a binary, move an ordinal by one, switch a categorical to any other
        value (the space's ``neighbours``, on index vectors)."""
        if len(index) == 0:
            return index
        moves = []
        eye = torch.eye(self.dimension, dtype=torch.long)
        base = index.unsqueeze(1)  # k x 1 x D
        for j, parameter in enumerate(self.parameters):
            if parameter.kind is ParameterKind.CATEGORICAL:
                for value in range(int(self.cardinalities[j])):
                    moved = base.clone()
                    moved[..., j] = value
                    moves.append(moved)
            else:
                moves.append(base + eye[j])
                moves.append(base - eye[j])
        out = torch.cat(moves, dim=1).reshape(-1, self.dimension)
        inside = (out >= 0).all(-1) & (out < self.cardinalities).all(-1)
        out = self.canonicalise(out[inside])
        origins = set(_keys(index))
        keep = [k not in origins for k in _keys(out)]
        return out[torch.tensor(keep, dtype=torch.bool)] if len(out) else out


def _hashable(value: object) -> object:
    """Choice lookup key: numbers by value (2 and 2.0 alike), names as they are."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return float(value)
    return value
