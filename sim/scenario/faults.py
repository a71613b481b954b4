"""The ``faults:`` section: per-node slowdowns, stragglers (per-step factors from a named
distribution or a file of measured step times, transient slow periods), node failures,
elastic membership (churn) and WAN link faults (degradation windows, random outages).

Which nodes, regions and links these name is checked against the topology by ``Scenario``
(``sim.scenario.root``); the engine plays them as processes (``sim/engine/faults.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from sim.algorithms.knobs import FieldError, PositiveFloat
from sim.scenario.files import read_step_times_csv
from sim.scenario.base import StrictModel


class LognormalFactor(StrictModel):
    kind: Literal["lognormal"] = "lognormal"
    mu: float = Field(default=0.0, ge=-10, le=10, description="Mean of log(factor) (0: median factor 1); in [-10, 10].")
    sigma: float = Field(default=0.25, ge=0, le=4, description="Standard deviation of log(factor) (sigma, not sigma^2); at most 4.")


class ParetoFactor(StrictModel):
    kind: Literal["pareto"] = "pareto"
    alpha: float = Field(default=3.0, ge=0.5, le=1e6, description="Tail index: smaller = heavier tail (mean is infinite for alpha <= 1); at least 0.5, so a draw stays finite.")
    scale: PositiveFloat = Field(default=1.0, le=1e6, description="Smallest factor (x_m of the Pareto distribution).")


class EmpiricalFactor(StrictModel):
    kind: Literal["empirical"] = "empirical"
    csv: str = Field(min_length=1, description=(
        "CSV file with a 'step_time_s' column of measured step times (relative to the scenario file); each step "
        "draws one row at random."))
    normalize: Literal["median", "none"] = Field(default="median", description=(
        "median: factor = drawn time / the file's median time (the node keeps its own typical step time); "
        "none: factor = drawn time in seconds (use with a 1 s base step time)."))

    def samples(self) -> list[float]:
        """The file's step times; ValueError (one line) if the file is missing or bad."""
        return read_step_times_csv(Path(self.csv))


FactorSpec = Annotated[Union[LognormalFactor, ParetoFactor, EmpiricalFactor], Field(discriminator="kind")]


class SlowPeriods(StrictModel):
    mean_off_s: PositiveFloat = Field(description="Mean seconds at normal speed between slow periods (exponential).")
    mean_on_s: PositiveFloat = Field(description="Mean seconds a slow period lasts (exponential).")
    factor: float = Field(gt=1, le=1e6, description="Step-time multiplier while slow (2 = half speed).")


class Where(StrictModel):
    regions: list[str] = Field(default_factory=list, description="Regions this applies to; with nodes empty too: every node.")
    nodes: list[str] = Field(default_factory=list, description="Nodes ('region/i', e.g. us/0) this applies to.")


class Stragglers(Where):
    """Per-step slowdowns: each step's time is multiplied by a factor drawn from a named stream."""
    factor: FactorSpec | None = Field(default=None, description="Distribution of the per-step time factor (lognormal, pareto, empirical).")
    scope: Literal["node", "region"] = Field(default="node", description=(
        "node: each node draws its own factors; region: a region's nodes share the draws (their k-th steps are "
        "equally slow), as a shared noisy neighbour or power cap would do."))
    slow_periods: SlowPeriods | None = Field(default=None, description="Transient slow periods per node (on/off, exponential durations).")


class DownWindow(StrictModel):
    node: str = Field(description="Node ('region/i').")
    start_s: float = Field(ge=0, allow_inf_nan=False, description="Simulated time (s) the node fails.")
    end_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Simulated time (s) it is back (then fetches parameters); null = never.")


class Failures(Where):
    """Node failures: random (MTBF/MTTR, exponential) on the selected nodes, and/or an explicit schedule."""
    mtbf_s: PositiveFloat | None = Field(default=None, description="Mean time between failures per node, seconds of up time (exponential).")
    mttr_s: PositiveFloat | None = Field(default=None, description="Mean time to recover, seconds (exponential); required with mtbf_s.")
    schedule: list[DownWindow] = Field(default_factory=list, description="Explicit failures [start_s, end_s).")

    @model_validator(mode="after")
    def _pair(self) -> "Failures":
        if (self.mtbf_s is None) != (self.mttr_s is None):
            raise ValueError("mtbf_s and mttr_s go together: set both or neither")
        for i, w in enumerate(self.schedule):
            if w.end_s is not None and w.end_s <= w.start_s:
                raise FieldError(("schedule", i, "end_s"), f"must be > start_s={w.start_s:g} (got {w.end_s:g})")
        return self


class Membership(StrictModel):
    """Elastic membership (INTELLECT-1 style): when a node is part of the run."""
    node: str = Field(description="Node ('region/i').")
    join_s: float | None = Field(default=None, ge=0, allow_inf_nan=False, description=(
        "Simulated time (s) the node joins (it fetches parameters first). Alone: absent from 0 to join_s; "
        "with an earlier leave_s: leaves at leave_s and rejoins at join_s."))
    leave_s: float | None = Field(default=None, ge=0, allow_inf_nan=False, description=(
        "Simulated time (s) the node leaves. Alone: gone for good; with an earlier join_s: present only in [join_s, leave_s)."))

    @model_validator(mode="after")
    def _some(self) -> "Membership":
        if self.join_s is None and self.leave_s is None:
            raise ValueError("set join_s, leave_s or both")
        if self.join_s is not None and self.join_s == self.leave_s:
            raise FieldError(("leave_s",), f"must differ from join_s={self.join_s:g}")
        return self

    def absent(self) -> list[tuple[float, float | None]]:
        """Absent intervals [start, end) (end None = for good)."""
        j, l = self.join_s, self.leave_s
        if l is None:
            return [(0.0, j)] if j > 0 else []
        if j is None:
            return [(l, None)]
        if l < j:
            return [(l, j)]
        return ([(0.0, j)] if j > 0 else []) + [(l, None)]


class Degradation(StrictModel):
    start_s: float = Field(ge=0, allow_inf_nan=False, description="Simulated time (s) the window starts.")
    end_s: float = Field(gt=0, allow_inf_nan=False, description="Simulated time (s) it ends; > start_s.")
    factor: float = Field(ge=0, le=1, description="Multiplies the link's bandwidth in the window (0 = outage).")


class LinkFault(StrictModel):
    """A WAN link's faults: degradation windows and random outages (flaps), both ways."""
    a: str = Field(description="Region at one end of an existing link.")
    b: str = Field(description="Region at the other end.")
    degrade: list[Degradation] = Field(default_factory=list, description="Windows of reduced bandwidth (they may not overlap).")
    mtbf_s: PositiveFloat | None = Field(default=None, description="Mean seconds between random outages of this link (exponential).")
    mttr_s: PositiveFloat | None = Field(default=None, description="Mean seconds a random outage lasts (exponential); required with mtbf_s.")

    @model_validator(mode="after")
    def _check(self) -> "LinkFault":
        if (self.mtbf_s is None) != (self.mttr_s is None):
            raise ValueError("mtbf_s and mttr_s go together: set both or neither")
        prev = None
        for i, w in enumerate(sorted(self.degrade, key=lambda w: w.start_s)):
            if w.end_s <= w.start_s:
                raise FieldError(("degrade", self.degrade.index(w), "end_s"), f"must be > start_s={w.start_s:g} (got {w.end_s:g})")
            if prev is not None and w.start_s < prev.end_s:
                raise FieldError(("degrade", self.degrade.index(w), "start_s"), f"windows may not overlap (previous ends at {prev.end_s:g})")
            prev = w
        return self


class Faults(StrictModel):
    """Stragglers, heterogeneity, failures, churn and flaky links (sim/engine/faults.py)."""
    node_step_time_multiplier: dict[str, Annotated[PositiveFloat, Field(le=1e6)]] = Field(default_factory=dict, description=(
        "Per-node step-time multipliers ('region/i' -> x), on top of the region's gpu and step_time_multiplier."))
    stragglers: list[Stragglers] = Field(default_factory=list, description="Straggler models; factors of several that select a node multiply.")
    failures: Failures | None = Field(default=None, description="Node failures (down, then fetch parameters from a live peer).")
    churn: list[Membership] = Field(default_factory=list, description="Nodes joining and leaving on a schedule.")
    links: list[LinkFault] = Field(default_factory=list, description="WAN link degradation windows and random outages.")

    @property
    def any(self) -> bool:
        return bool(self.node_step_time_multiplier or self.stragglers or self.failures or self.churn or self.links)

