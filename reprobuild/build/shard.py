"""Sharding: split a build into units of work and pick a deterministic, balanced subset of them.

A unit is one Go target of a `go` pipeline (built for each of its platforms), or one whole `command`
or `paddle` pipeline. Planning is pure: the same pipelines and the same recorded costs give the same
shards on every machine, so `build --shard 1/3` on one runner and `--shard 2/3` on another never
overlap and never miss a unit (and `merge` checks it through `plan_digest`).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, replace

from reprobuild.config.pipeline import GoTarget, Pipeline
from reprobuild.errors import BadInput

COST_RESOLUTION = 0.1  # seconds: costs are rounded, so small timing noise does not reshuffle shards


@dataclass(frozen=True)
class Unit:
    """One unit of work: a pipeline, narrowed to one target for `go` pipelines."""

    pipeline: Pipeline
    target: GoTarget | None = None

    @property
    def id(self) -> str:
        """`pipeline/target` for a Go target, `pipeline` for a whole pipeline: the stable sort key."""
        return f"{self.pipeline.name}/{self.target.name}" if self.target else self.pipeline.name

    def as_pipeline(self) -> Pipeline:
        """The pipeline this unit builds (a Go pipeline with only this unit's target)."""
        return replace(self.pipeline, targets=(self.target,)) if self.target else self.pipeline


def plan_units(pipelines: list[Pipeline]) -> list[Unit]:
    """Every unit of the pipelines, sorted by id."""
    units: list[Unit] = []
    for p in pipelines:
        if p.builder == "go":
            units += [Unit(p, t) for t in p.targets]
        else:
            units.append(Unit(p))
    return sorted(units, key=lambda u: u.id)


def parse_shard(spec: str) -> tuple[int, int]:
    """`i/n` (1-based) → (i, n)."""
    head, sep, tail = spec.partition("/")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise BadInput(f"--shard {spec!r}: expected i/n with 1 <= i <= n, e.g. --shard 2/3")
    return i, n


def assign(units: list[Unit], n: int, costs: dict[str, float] | None = None) -> list[list[Unit]]:
    """All n shards (index 0 is shard 1/n), each sorted by unit id.

    With recorded costs, longest-first onto the least-loaded shard (ties: lowest shard), unknown units
    counted at the median known cost; without any, round-robin over the units sorted by id.
    """
    if n < 1:
        raise BadInput(f"cannot split a build into {n} shards")
    ordered = sorted(units, key=lambda u: u.id)
    known = {u.id: _quantize(costs[u.id]) for u in ordered if costs and u.id in costs}
    shards: list[list[Unit]] = [[] for _ in range(n)]
    if not known:
        for k, unit in enumerate(ordered):
            shards[k % n].append(unit)
        return shards
    default = _quantize(statistics.median(known.values()))
    weighted = sorted(ordered, key=lambda u: (-known.get(u.id, default), u.id))
    loads = [0.0] * n
    for unit in weighted:
        k = min(range(n), key=lambda s: (round(loads[s], 6), s))
        shards[k].append(unit)
        loads[k] += known.get(unit.id, default)
    return [sorted(s, key=lambda u: u.id) for s in shards]


def select(units: list[Unit], i: int, n: int, costs: dict[str, float] | None = None) -> list[Unit]:
    """The units of shard i of n (1-based), sorted by id."""
    if not 1 <= i <= n:
        raise BadInput(f"--shard {i}/{n}: expected 1 <= i <= n")
    return assign(units, n, costs)[i - 1]


def plan_digest(shards: list[list[Unit]]) -> str:
    """Identifies one assignment of units to shards: shards of one build must all carry the same."""
    blob = json.dumps([[u.id for u in s] for s in shards], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _quantize(seconds: float) -> float:
    return round(max(seconds, 0.0) / COST_RESOLUTION) * COST_RESOLUTION
