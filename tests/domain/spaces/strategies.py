"""Hypothesis strategies over any search space: raw grid points and valid canonical points."""

from __future__ import annotations

from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from autopeft_service.domain.spaces import SearchSpaceBase


@st.composite
def grid_points(draw: st.DrawFn, space: SearchSpaceBase) -> dict[str, Any]:
    """Any value of every parameter (valid or not, canonical or not)."""
    return {p.name: draw(st.sampled_from(p.values)) for p in space.parameters()}


@st.composite
def valid_points(draw: st.DrawFn, space: SearchSpaceBase) -> dict[str, Any]:
    """A valid point: a grid point put in canonical form, kept when the rule holds."""
    point = space.canonical(draw(grid_points(space)))
    assume(space.rule_error(point) is None)
    return point
