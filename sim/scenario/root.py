"""The root of the schema, ``Scenario``: every section together, and the rules that span
sections (a plug-in method validated by its own knobs, the default model and data kinds, a
timing proxy that fits the compute mode, fault targets that exist in the topology, an engine
that fits the model, a method's knobs that fit the topology and model, one vocabulary).

A section's own rules stay in its module; only what needs two sections at once is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from sim.algorithms import registered
from sim.algorithms.knobs import FieldError, Int
from sim.scenario.algorithm import METHOD_SECTIONS, AlgorithmSpec, plugin_method
from sim.scenario.base import StrictModel
from sim.scenario.faults import Faults, Where
from sim.scenario.run import Compute, Run, TimingProxy
from sim.scenario.topology import Topology
from sim.scenario.training import DataSpec, GPTModel, InnerOptimizer, ModelSpec, SyntheticData


class Scenario(StrictModel):
    name: str = Field(default="scenario", min_length=1, description="Name shown in dashboards and run directories.")
    description: str = Field(default="", description="Free text.")
    seed: Int = Field(default=0, ge=0, description="Root seed; every random stream derives from it and its own name.")
    topology: Topology
    model: ModelSpec = Field(default_factory=GPTModel)
    data: DataSpec = Field(default_factory=SyntheticData)
    optimizer: InnerOptimizer = Field(default_factory=InnerOptimizer, description="Inner optimizer of every worker.")
    algorithm: AlgorithmSpec
    compute: Compute = Field(default_factory=Compute)
    timing: TimingProxy | None = Field(default=None, description="Optional timing proxy: step times and payloads of a larger model.")
    numerics: bool = Field(default=True, description="false (or off): timing-only run, no model is trained and torch is never imported.")
    faults: Faults = Field(default_factory=Faults, description="Stragglers, failures, churn and link faults (default: none).")
    run: Run

    @model_validator(mode="before")
    @classmethod
    def _plug_ins(cls, data: Any, info: ValidationInfo) -> Any:
        """An ``algorithm:`` that names a plug-in (``plugin:``, or a name an installed package
        registers) is validated by the plug-in's own ``Spec``; an unknown name is one line."""
        alg = data.get("algorithm") if isinstance(data, dict) else None
        if not isinstance(alg, dict):
            return data
        name = alg.get("name")
        if "plugin" in alg or (isinstance(name, str) and name not in METHOD_SECTIONS):
            if "plugin" not in alg and name not in registered():
                known = registered()
                raise FieldError(("algorithm",), f"unknown name {name!r}; allowed: {', '.join(known)}, "
                                  "or a plug-in (plugin: FILE.py:Class)")
            base = (info.context or {}).get("base_dir")
            try:
                spec = plugin_method(alg, Path(base) if base else None)
            except FieldError as err:
                raise FieldError(("algorithm",) + tuple(err.loc), err.msg) from None
            return {**data, "algorithm": spec}
        return data

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        """A model or data section without ``kind`` is the default kind (gpt, synthetic)."""
        if isinstance(data, dict):
            for section, kind in (("model", "gpt"), ("data", "synthetic")):
                if isinstance(data.get(section), dict) and "kind" not in data[section]:
                    data = {**data, section: {"kind": kind, **data[section]}}
        return data

    @model_validator(mode="after")
    def _timing(self) -> "Scenario":
        if self.timing is not None and self.timing.step_time_s is None and self.compute.step_time.mode == "measured":
            raise FieldError(("timing", "step_time_s"), "required with compute.step_time mode measured (that mode times the trained model, not the proxy)")
        if not self.numerics and self.timing is None:
            raise FieldError(("timing",), "required when numerics is off: the timed model's params and layers, e.g. {params: 1.0e9, layers: 24}")
        if not self.numerics and self.compute.step_time.mode == "measured" and (self.timing is None or self.timing.step_time_s is None):
            raise FieldError(("compute", "step_time", "mode"), "measured needs numerics: true (it times the real model); use fixed or flops")
        return self

    @model_validator(mode="after")
    def _fault_targets(self) -> "Scenario":
        regions = [r.name for r in self.topology.regions]
        nodes = [f"{r.name}/{i}" for r in self.topology.regions for i in range(r.nodes)]
        shown = ", ".join(nodes[:8]) + (", ..." if len(nodes) > 8 else "")

        def node(loc: tuple, name: str) -> None:
            if name not in nodes:
                raise FieldError(("faults",) + loc, f"unknown node '{name}'; nodes are 'region/i': {shown}")

        def where(loc: tuple, w: Where) -> None:
            for i, r in enumerate(w.regions):
                if r not in regions:
                    raise FieldError(("faults",) + loc + ("regions", i), f"unknown region '{r}'; regions are: {', '.join(regions)}")
            for i, n in enumerate(w.nodes):
                node(loc + ("nodes", i), n)

        f = self.faults
        for n in f.node_step_time_multiplier:
            node(("node_step_time_multiplier",), n)
        for i, st in enumerate(f.stragglers):
            where(("stragglers", i), st)
            if st.factor is None and st.slow_periods is None:
                raise FieldError(("faults", "stragglers", i), "set factor, slow_periods or both")
        if f.failures is not None:
            where(("failures",), f.failures)
            for i, w in enumerate(f.failures.schedule):
                node(("failures", "schedule", i, "node"), w.node)
        for i, m in enumerate(f.churn):
            node(("churn", i, "node"), m.node)
        links = {frozenset((l.a, l.b)) for l in self.topology.links}
        for i, l in enumerate(f.links):
            if frozenset((l.a, l.b)) not in links:
                raise FieldError(("faults", "links", i), f"no topology link joins '{l.a}' and '{l.b}'")
        return self

    @model_validator(mode="after")
    def _engine(self) -> "Scenario":
        if self.run.engine == "stacked" and self.model.kind != "gpt":
            raise FieldError(("run", "engine"), f"stacked needs model kind gpt (got {self.model.kind}); use auto or vmap")
        if self.run.compile and (self.run.engine == "vmap" or self.model.kind != "gpt"):
            raise FieldError(("run", "compile"), "needs the stacked engine (model kind gpt, run.engine auto or stacked)")
        return self

    @model_validator(mode="after")
    def _method_fits(self) -> "Scenario":
        """Knobs the user set that would be silently clipped to the topology or model: refused
        instead (a default that does not fit, e.g. fragment_layers 3 on a 1-layer model, is clipped).
        The method says (``Algorithm.check_fits``)."""
        from sim.algorithms import algorithm_class

        if self.numerics and self.model.kind == "gpt":
            layers, where = self.model.n_layers, "model.n_layers"
        elif not self.numerics and self.timing is not None:
            layers, where = self.timing.layers, "timing.layers"
        else:
            layers = where = None
        try:
            cls = algorithm_class(self.algorithm)
            cls.check_fits(self.algorithm, self.topology.n_workers, layers, where)
            cls.server_plan(self.algorithm, self.topology)
        except FieldError as err:
            raise FieldError(("algorithm",) + tuple(err.loc), err.msg) from None
        return self

    @model_validator(mode="after")
    def _vocab(self) -> "Scenario":
        if isinstance(self.data, SyntheticData) and self.model.vocab_size not in (None, self.data.vocab_size):
            raise FieldError(("model", "vocab_size"), f"must equal data.vocab_size={self.data.vocab_size} or be omitted (got {self.model.vocab_size})")
        return self

