"""Scenario files: YAML -> a validated, frozen ``Scenario``.

A scenario says everything one run needs: the topology (regions of GPU nodes and the
WAN links between them), the tiny model that is really trained, the data, the
algorithm and its knobs (named by their paper symbols), how long a step takes in
virtual time, and when the run stops.

Every model is strict (``extra="forbid"``) and frozen. Bad input raises
``ScenarioError`` whose message is one line: the field path and what is allowed.

This package's public face; its modules, in the order a scenario meets them:

- ``yaml_io``: reading YAML safely (duplicate keys, ambiguous integers, non-plain values, size);
- ``variants``: ``--set`` overrides and ``variants:`` merged into the base;
- ``load``: file -> validated scenarios, paths resolved relative to the file;
- the sections: ``topology`` (GPU names from ``sim.hardware``'s table), ``training`` (model, data, optimizer),
  ``algorithm`` (from the method registry), ``run`` (compute, timing proxy, run), ``faults``,
  and ``root`` (``Scenario``: the rules that span sections), all on ``base.StrictModel``;
- ``files``: the CSV files a scenario names, parsed outside the models;
- ``errors``: ``ScenarioError`` and the one-line formatter;
- ``schema``: the JSON Schema (``locosim schema``).
"""

from __future__ import annotations

from sim.scenario.algorithm import METHOD_SECTIONS, AlgorithmSpec
from sim.scenario.errors import ScenarioError
from sim.scenario.faults import (DownWindow, EmpiricalFactor, FactorSpec, Failures, Faults, LinkFault, LognormalFactor,
                                 Membership, ParetoFactor, SlowPeriods, Stragglers)
from sim.scenario.load import load_scenario, load_variants, parse_scenario
from sim.scenario.root import Scenario
from sim.scenario.run import Compute, FixedStepTime, FlopsStepTime, MeasuredStepTime, Run, StepTimeSpec, TimingProxy
from sim.scenario.schema import json_schema, method_schema
from sim.scenario.topology import Link, LinkOutage, LinkSpec, Region, Server, Topology
from sim.scenario.training import (DataSpec, GPTModel, InnerOptimizer, MLPModel, ModelSpec, PluginData, PluginModel,
                                   SyntheticData, TextData)
from sim.scenario.variants import apply_overrides, merge_variant
from sim.scenario.yaml_io import StrictYAMLError, check_plain, load_yaml_text, read_yaml

__all__ = [
    "Scenario", "ScenarioError", "load_scenario", "load_variants", "parse_scenario", "read_yaml", "load_yaml_text",
    "check_plain", "StrictYAMLError", "apply_overrides", "merge_variant", "json_schema", "method_schema",
    "Topology", "Region", "LinkSpec", "LinkOutage", "Link", "Server",
    "ModelSpec", "GPTModel", "MLPModel", "PluginModel", "DataSpec", "SyntheticData", "TextData", "PluginData",
    "InnerOptimizer", "AlgorithmSpec", "METHOD_SECTIONS",
    "StepTimeSpec", "FixedStepTime", "FlopsStepTime", "MeasuredStepTime", "Compute", "TimingProxy", "Run",
    "Faults", "FactorSpec", "LognormalFactor", "ParetoFactor", "EmpiricalFactor", "SlowPeriods", "Stragglers",
    "DownWindow", "Failures", "Membership", "LinkFault",
]
