"""Scenario files: YAML -> a validated, frozen ``Scenario``.

A scenario says everything one run needs: the topology (regions of GPU nodes and the
WAN links between them), the tiny model that is really trained, the data, the
algorithm and its knobs (named by their paper symbols), how long a step takes in
virtual time, and when the run stops.

Every model is strict (``extra="forbid"``) and frozen. Bad input raises
``ScenarioError`` whose message is one line: the field path and what is allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, SerializeAsAny,
                      Strict, Tag, ValidationError, ValidationInfo, model_validator)

from sim import loader
from sim.algorithms import method_class, registered, sections
from sim.algorithms.knobs import FieldError as _FieldError
from sim.algorithms.knobs import Int, MethodSpec, OuterMethodSpec, PositiveFloat, WireDtype  # noqa: F401  (re-exported)


class ScenarioError(ValueError):
    """Bad scenario input; ``str(err)`` is one line naming the field and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Peak dense bf16 FLOP/s of common accelerators (vendor datasheets, no sparsity).
GPU_PEAK_FLOPS: dict[str, float] = {
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
    "B200": 2250e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX4090": 165e12,
    "V100": 125e12,
    "TPUv5e": 197e12,
}


def _known_gpu(name: str) -> str:
    if name not in GPU_PEAK_FLOPS:
        raise ValueError(f"unknown gpu '{name}'; known: {', '.join(GPU_PEAK_FLOPS)}")
    return name


GpuName = Annotated[str, AfterValidator(_known_gpu)]

# Bounds that keep a scenario inside what one process can simulate: beyond them the graph,
# the data tables or the clock itself would exhaust memory or overflow before a check could run.
MAX_WORKERS = 100_000
MAX_MARKOV_TABLE = 20_000_000  # (vocab_size - topics) ** (order + 1): 16 bytes each while the language is built
DEFAULT_MAX_EVENTS = 100_000_000


def _read_text(p: Path) -> str:
    """A UTF-8 file referenced by a scenario; ValueError (one line) when it is missing or unreadable."""
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file {str(p)!r}") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise ValueError(f"cannot read {str(p)!r} as a UTF-8 text file ({type(err).__name__})") from None


# --------------------------------------------------------------------------- topology
class Region(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Region name, referenced by links (letters, digits, _ . -).")
    nodes: Int = Field(ge=1, le=MAX_WORKERS, description=f"Number of GPU nodes (one worker / replica each) in this region (at most {MAX_WORKERS:,} in all).")
    gpu: GpuName | None = Field(default=None, description=(
        f"GPU name, used by compute.step_time mode 'flops' for its peak FLOP/s; one of: {', '.join(GPU_PEAK_FLOPS)}."))
    step_time_multiplier: PositiveFloat = Field(
        default=1.0, le=1e6, description="Multiplies every step time of this region's nodes (1 = reference speed; 2 = half as fast).")


class LinkSpec(_Strict):
    bandwidth_gbps: float = Field(ge=1e-6, description="Bandwidth in Gbit/s, each direction (full duplex), >= 1e-6 (1 kbit/s); .inf allowed.")
    latency_s: float = Field(ge=0, le=3600, allow_inf_nan=False, description="One-way latency in seconds (at most 3600).")


class LinkOutage(_Strict):
    start_s: float = Field(ge=0, allow_inf_nan=False, description="Simulated time (s) the link goes down.")
    end_s: float = Field(gt=0, allow_inf_nan=False, description="Simulated time (s) the link is back up; > start_s.")


class Link(LinkSpec):
    """A WAN link; its bandwidth may follow a CSV time series and it may have scheduled outages."""
    a: str = Field(description="Region at one end.")
    b: str = Field(description="Region at the other end.")
    bandwidth_csv: str | None = Field(default=None, min_length=1, description=(
        "CSV file with header 'time_s,bandwidth_gbps' (relative to the scenario file): from each row's time_s on, "
        "the link has that bandwidth each direction (a step function; 0 = down); before the first row, bandwidth_gbps."))
    outages: list[LinkOutage] = Field(default_factory=list, description=(
        "Scheduled outages [start_s, end_s): capacity 0 both ways; a transfer starting meanwhile takes another "
        "route if one is up, one already on the link stalls until it is back. Outages may overlap (their union counts)."))

    @model_validator(mode="after")
    def _outages(self) -> "Link":
        for i, o in enumerate(self.outages):
            if o.end_s <= o.start_s:
                raise _FieldError(("outages", i, "end_s"), f"must be > start_s={o.start_s:g} (got {o.end_s:g})")
        return self

    def bandwidth_series(self, base_dir: str | Path | None = None) -> list[tuple[float, float]]:
        """(time_s, bandwidth_gbps) rows of ``bandwidth_csv`` ([] without one); a relative path is
        taken relative to ``base_dir`` (else the working directory). ValueError, one line, if bad:
        missing file, wrong header, a row that is not two numbers, times not finite, >= 0 and
        strictly increasing, or a bandwidth not finite and >= 0."""
        import csv
        import math

        if self.bandwidth_csv is None:
            return []
        p = Path(self.bandwidth_csv)
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        text = _read_text(p)
        rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in r)]
        if not rows or [c.strip() for c in rows[0][1]] != ["time_s", "bandwidth_gbps"]:
            got = ",".join(rows[0][1]) if rows else "an empty file"
            raise ValueError(f"{p.name}: the header must be 'time_s,bandwidth_gbps' (got {got!r})")
        if len(rows) < 2:
            raise ValueError(f"{p.name}: needs at least one data row after the header")
        out: list[tuple[float, float]] = []
        for line, row in rows[1:]:
            try:
                t, bw = (float(c) for c in row)
            except ValueError:
                raise ValueError(f"{p.name} line {line}: expected two numbers time_s,bandwidth_gbps "
                                 f"(got {','.join(row)!r})") from None
            if not (math.isfinite(t) and t >= 0):
                raise ValueError(f"{p.name} line {line}: time_s must be finite and >= 0 (got {row[0].strip()})")
            if out and t <= out[-1][0]:
                raise ValueError(f"{p.name} line {line}: time_s must increase from row to row "
                                 f"(got {row[0].strip()} after {out[-1][0]:g})")
            if not (math.isfinite(bw) and bw >= 0):
                raise ValueError(f"{p.name} line {line}: bandwidth_gbps must be finite and >= 0 (got {row[1].strip()})")
            out.append((t, bw))
        if out[-1][1] == 0:
            raise ValueError(f"{p.name}: the last row sets bandwidth_gbps 0 from time_s {out[-1][0]:g} on, for ever "
                             "(every transfer over the link would wait for good); end with a bandwidth > 0, or use "
                             "outages for a link that is down for a while")
        return out

    @staticmethod
    def _resolve_csv_paths(sc: "Scenario", base_dir: Path) -> "Scenario":
        """Make every link's bandwidth_csv absolute (relative to base_dir) and check that it parses."""
        links = list(sc.topology.links)
        for i, link in enumerate(links):
            if link.bandwidth_csv is None:
                continue
            p = Path(link.bandwidth_csv)
            p = p if p.is_absolute() else (base_dir / p).resolve()
            links[i] = link.model_copy(update={"bandwidth_csv": str(p)})
            try:
                links[i].bandwidth_series()
            except ValueError as err:
                raise ScenarioError(f"topology.links.{i}.bandwidth_csv: {err}") from None
        if links == list(sc.topology.links):
            return sc
        return sc.model_copy(update={"topology": sc.topology.model_copy(update={"links": links})})


class Server(_Strict):
    """A parameter server: a network node attached to its region's switch that computes no inner
    steps, only a method's server math (methods without a barrier: async_local_sgd, halos, fedbuff)."""
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Server name, referenced by methods (letters, digits, _ . -; not a region's name).")
    region: str = Field(description="Region whose switch the server is attached to.")
    bandwidth_gbps: float | None = Field(default=None, ge=1e-6, description=(
        "Its NIC to the region's switch, Gbit/s each direction; default: the intra-region link's bandwidth."))
    apply_time_s: float = Field(default=0.0, ge=0, le=3600, allow_inf_nan=False, description=(
        "Simulated seconds the server spends on each payload it handles (an update applied, a model merged); "
        "payloads are handled one at a time in arrival order, so a busy server queues them."))


class Topology(_Strict):
    regions: list[Region] = Field(min_length=1, description="Regions of GPU nodes.")
    links: list[Link] = Field(default_factory=list, description="WAN links between regions (full duplex).")
    intra_region: LinkSpec = Field(
        default=LinkSpec(bandwidth_gbps=100.0, latency_s=1e-4),
        description="Link from each node to its region's switch (bandwidth each direction, latency).")
    servers: list[Server] = Field(default_factory=list, description=(
        "Parameter servers (methods without a barrier: async_local_sgd, halos, fedbuff): each a node on its "
        "region's switch that runs the method's server math on every payload that arrives."))

    @model_validator(mode="after")
    def _check(self) -> "Topology":
        names = [r.name for r in self.regions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _FieldError(("regions",), f"region names must be unique; repeated: {', '.join(dup)}")
        seen: set[str] = set()
        for i, srv in enumerate(self.servers):
            if srv.region not in names:
                raise _FieldError(("servers", i, "region"), f"unknown region '{srv.region}'; regions are: {', '.join(names)}")
            if srv.name in names:
                raise _FieldError(("servers", i, "name"), f"'{srv.name}' is a region's name; a server needs its own")
            if srv.name in seen:
                raise _FieldError(("servers", i, "name"), f"server names must be unique; '{srv.name}' is repeated")
            seen.add(srv.name)
        for i, link in enumerate(self.links):
            for end in ("a", "b"):
                name = getattr(link, end)
                if name not in names:
                    raise _FieldError(("links", i, end), f"unknown region '{name}'; regions are: {', '.join(names)}")
            if link.a == link.b:
                raise _FieldError(("links", i, "b"), "a link must join two different regions")
            for j, other in enumerate(self.links[:i]):
                if {other.a, other.b} == {link.a, link.b}:
                    raise _FieldError(("links", i), f"links.{j} already joins '{link.a}' and '{link.b}'; "
                                                    "one link per pair of regions (merge them into one)")
        if self.n_workers > MAX_WORKERS:
            raise _FieldError(("regions",), f"{self.n_workers:,} nodes in all; at most {MAX_WORKERS:,}")
        if len(self.regions) > 1:
            import networkx as nx

            g = nx.Graph()
            g.add_nodes_from(names)
            g.add_edges_from((l.a, l.b) for l in self.links)
            if not nx.is_connected(g):
                parts = [sorted(c) for c in nx.connected_components(g)]
                raise _FieldError(("links",), f"regions must be connected; separate groups: {parts}")
        return self

    @property
    def n_workers(self) -> int:
        return sum(r.nodes for r in self.regions)

    def servers_by_region(self) -> dict[str, list[Server]]:
        out: dict[str, list[Server]] = {}
        for srv in self.servers:
            out.setdefault(srv.region, []).append(srv)
        return out


# --------------------------------------------------------------------------- model
class GPTModel(_Strict):
    kind: Literal["gpt"] = "gpt"
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    d_model: Int = Field(default=64, ge=4, le=65_536, description="Embedding width.")
    n_layers: Int = Field(default=2, ge=1, le=1024, description="Transformer blocks (L).")
    n_heads: Int = Field(default=4, ge=1, description="Attention heads; must divide d_model.")
    seq_len: Int = Field(default=64, ge=2, le=1_048_576, description="Context length in tokens.")
    mlp_ratio: Int = Field(default=4, ge=1, le=64, description="MLP hidden width = mlp_ratio x d_model.")

    @model_validator(mode="after")
    def _heads(self) -> "GPTModel":
        if self.d_model % self.n_heads:
            raise _FieldError(("n_heads",), f"must divide d_model={self.d_model} (got {self.n_heads})")
        return self


class MLPModel(_Strict):
    kind: Literal["mlp"] = "mlp"
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    d_model: Int = Field(default=32, ge=2, le=65_536, description="Embedding width per context token.")
    hidden: Int = Field(default=128, ge=1, le=1_048_576, description="Hidden width.")
    context: Int = Field(default=3, ge=1, le=4096, description="Previous tokens the MLP sees.")
    seq_len: Int = Field(default=32, ge=2, le=1_048_576, description="Tokens per training sequence.")


PLUGIN_REF_DOC = "FILE.py:Name (relative to the scenario file) or package.module:Name"


class PluginModel(_Strict):
    """A user's model: any ``torch.nn.Module`` whose forward maps tokens [batch, seq_len] to
    logits [batch, seq_len, vocab_size] (``output: logits``) or inputs and targets to its own
    loss (``output: loss``), built as ``Name(vocab_size=V, **args)``; trained on the vmap
    engine. Blocks named ``blocks.<i>.`` are the layers of per-layer timing."""
    kind: Literal["plugin"] = "plugin"
    plugin: str = Field(min_length=1, description=f"The model class: {PLUGIN_REF_DOC}.")
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "Keyword arguments of the constructor (plain YAML values); one it annotates pathlib.Path is a path "
        "relative to the scenario file (sim/paths.py)."))
    output: Literal["logits", "loss"] = Field(default="logits", description=(
        "What forward returns: logits = forward(tokens) gives [batch, seq_len, vocab] and locosim takes the "
        "next-token cross-entropy; loss = forward(tokens, targets) gives the model's own loss, one number "
        "(the mean over the batch), trained and evaluated as it is."))
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    seq_len: Int = Field(default=32, ge=2, le=1_048_576, description="Tokens per training sequence.")


ModelSpec = Annotated[Union[GPTModel, MLPModel, PluginModel], Field(discriminator="kind")]


# --------------------------------------------------------------------------- data
class SyntheticData(_Strict):
    kind: Literal["synthetic"] = "synthetic"
    vocab_size: Int = Field(default=32, ge=3, description="Total tokens, including one topic marker per topic.")
    order: Int = Field(default=2, ge=1, le=4, description="Markov order k: the next token depends on the last k.")
    branching: Int = Field(default=3, ge=1, description="Possible next tokens per context (sparsity).")
    concentration: PositiveFloat = Field(default=1.0, description="Dirichlet concentration of transition probabilities.")
    topics: Int = Field(default=1, ge=1, description="Number of topic sources (Markov chains on one support).")
    topic_spread: float = Field(default=0.5, ge=0, le=1, description=(
        "How different topics are: 0 = identical chains, 1 = independent probabilities on the shared support."))
    shards: Literal["iid", "non_iid"] = Field(default="iid", description="iid: every worker samples topics uniformly; non_iid: worker i mostly sees topic i mod topics.")
    skew: float = Field(default=0.9, ge=0, le=1, description="non_iid: fraction of a worker's sequences from its own topic.")

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticData":
        if self.vocab_size - self.topics < 2:
            raise _FieldError(("vocab_size",), f"must exceed topics by at least 2 (got vocab_size={self.vocab_size}, topics={self.topics})")
        if self.branching > self.vocab_size - self.topics:
            raise _FieldError(("branching",), f"must be <= vocab_size - topics = {self.vocab_size - self.topics} (got {self.branching})")
        if (self.vocab_size - self.topics) ** self.order > 2_000_000:
            # blame what makes it large: a vocabulary that alone has too many contexts, else the order
            field_ = "vocab_size" if self.order == 1 or self.vocab_size - self.topics > 2_000_000 else "order"
            raise _FieldError((field_,), f"(vocab_size - topics) ** order must be <= 2,000,000 contexts (got "
                                         f"({self.vocab_size} - {self.topics}) ** {self.order})")
        table = (self.vocab_size - self.topics) ** (self.order + 1)
        if table > MAX_MARKOV_TABLE:  # refused before the language's tables are allocated
            raise _FieldError(("vocab_size",), f"the synthetic language needs (vocab_size - topics) ** (order + 1) "
                                               f"= {table:,} table entries (about {16 * table / 2**30:.3g} GiB to "
                                               f"build); at most {MAX_MARKOV_TABLE:,}: lower vocab_size or order")
        return self


class TextData(_Strict):
    kind: Literal["text"] = "text"
    path: str = Field(description="Local UTF-8 text file, trained on character by character (relative to the scenario file).")
    eval_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="Tail fraction of the file held out for eval.")
    shards: Literal["iid", "non_iid"] = Field(default="iid", description="iid: random windows anywhere; non_iid: worker i reads only its contiguous slice.")


class PluginData(_Strict):
    """A user's data: ``Name(seq_len=T, n_workers=M, seed=S, **args)`` (a class or a function)
    returns an object with ``vocab_size``, ``train_batch(g, worker, batch_size)`` and
    ``eval_batch(g, batch_size)`` (int64 arrays [batch_size, seq_len + 1] drawn with the numpy
    generator ``g``, a named stream, so runs stay reproducible) and optionally ``loss_floor``."""
    kind: Literal["plugin"] = "plugin"
    plugin: str = Field(min_length=1, description=f"The data's class or function: {PLUGIN_REF_DOC}.")
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "Keyword arguments (plain YAML values); one the plug-in annotates pathlib.Path is a path relative to the "
        "scenario file (sim/paths.py)."))


DataSpec = Annotated[Union[SyntheticData, TextData, PluginData], Field(discriminator="kind")]


# --------------------------------------------------------------------------- optimizer
class InnerOptimizer(_Strict):
    name: Literal["adamw", "sgd"] = Field(default="adamw", description="Inner optimizer (each replica keeps its own state).")
    lr: PositiveFloat = Field(default=3e-3, description="Inner learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="Decoupled weight decay (AdamW).")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: PositiveFloat = Field(default=1e-8, description="AdamW epsilon.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip each replica's gradient to this global norm; null = off.")
    warmup_steps: Int = Field(default=0, ge=0, description="Linear learning-rate warmup over this many inner steps (per replica).")
    schedule: Literal["constant", "cosine"] = Field(default="constant", description="After warmup: constant, or cosine decay over decay_steps to min_lr_ratio * lr.")
    decay_steps: Int | None = Field(default=None, ge=1, description="Inner steps of cosine decay after warmup (required for schedule: cosine).")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="Final learning rate of the cosine schedule, as a fraction of lr.")

    @model_validator(mode="after")
    def _decay(self) -> "InnerOptimizer":
        if self.schedule == "cosine" and self.decay_steps is None:
            raise _FieldError(("decay_steps",), "required when schedule is cosine (inner steps of decay after warmup)")
        return self


# --------------------------------------------------------------------------- algorithms
METHOD_SECTIONS: dict[str, type[BaseModel]] = sections()
"""Methods whose knobs are choices of this schema's ``algorithm`` union (from the registry,
``sim.algorithms``); the others carry theirs as their class's ``Spec`` (a ``MethodSpec``)."""


def _method_tag(value: Any) -> str | None:
    if isinstance(value, MethodSpec):
        return "plugin"
    if isinstance(value, dict):
        return value.get("name")
    return getattr(value, "name", None)


AlgorithmSpec = Annotated[Union[tuple(Annotated[m, Tag(n)] for n, m in METHOD_SECTIONS.items())
                                + (Annotated[SerializeAsAny[MethodSpec], Tag("plugin")],)],
                          Discriminator(_method_tag)]


def _plugin_method(alg: dict, base_dir: Path | None) -> MethodSpec:
    """A plug-in method's validated knobs (its class's ``Spec``), or a located one-line error."""
    ref = alg.get("plugin")
    if ref is None:
        ref = registered().get(alg.get("name"))
    if not isinstance(ref, str) or not ref:
        raise _FieldError(("plugin",), "must be FILE.py[:Class] or package.module:Class")
    ref = loader.resolve_ref(ref, base_dir)
    try:
        cls = method_class(ref)
    except loader.PluginError as err:
        raise _FieldError(("plugin",), str(err)) from None
    try:
        return cls.Spec.model_validate({**alg, "plugin": ref})
    except ValidationError as err:
        e = err.errors()[0]
        loc = tuple(e["loc"])
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, _FieldError):  # a validator that names its field (error_feedback, ...)
            loc, msg = loc + tuple(inner.loc), inner.msg
        elif e["type"] == "extra_forbidden":
            msg = f"unknown key for {cls.__name__}; allowed here: {', '.join(cls.Spec.model_fields)}"
            named = _field_for_symbol(cls.Spec, str(loc[-1]))
            if named:
                msg += f"; did you mean {named} (the paper's {loc[-1]})?"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        raise _FieldError(loc, msg) from None


# --------------------------------------------------------------------------- compute
class FixedStepTime(_Strict):
    mode: Literal["fixed"] = "fixed"
    step_time_s: PositiveFloat = Field(le=1e6, description="Seconds per inner step (forward + backward + optimizer) at multiplier 1.")


class FlopsStepTime(_Strict):
    mode: Literal["flops"] = "flops"
    gpu: GpuName = Field(default="H100", description=f"Default GPU where a region names none; one of: {', '.join(GPU_PEAK_FLOPS)}.")
    mfu: float = Field(default=0.4, gt=0, le=1, description="Model FLOPs utilization.")
    gpus_per_node: Int = Field(default=1, ge=1, description="GPUs per node (one replica spans a node).")


class MeasuredStepTime(_Strict):
    mode: Literal["measured"] = "measured"
    repeats: Int = Field(default=5, ge=1, description="Timed steps after warm-up; the median is used. Not reproducible run to run.")


StepTimeSpec = Annotated[Union[FixedStepTime, FlopsStepTime, MeasuredStepTime], Field(discriminator="mode")]


class Compute(_Strict):
    step_time: StepTimeSpec = Field(default=FixedStepTime(step_time_s=0.1), description="How long an inner step takes in virtual time.")
    batch_size: Int = Field(default=16, ge=1, le=1_048_576, description="Sequences per worker per inner step.")


# --------------------------------------------------------------------------- run
def _threads(v: Any) -> Any:
    """run.threads: 'auto' or a whole number 1..1024 (never true, 2.0 or 'fast')."""
    if v == "auto" and isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024:
        raise ValueError("'auto' or a whole number of CPU threads from 1 to 1024")
    return v


Threads = Annotated[Union[Literal["auto"], int], BeforeValidator(_threads)]


class Run(_Strict):
    max_sim_time_s: PositiveFloat | None = Field(default=None, description="Stop after this much simulated time.")
    max_rounds: Int | None = Field(default=None, ge=1, description="Stop after this many syncs (outer steps; ddp: steps).")
    max_tokens: Int | None = Field(default=None, ge=1, description="Stop after this many training tokens over all workers.")
    eval_every_steps: Int | None = Field(default=None, ge=1, description="Evaluate the global model every N inner steps of worker 0.")
    eval_every_s: PositiveFloat | None = Field(default=None, description="Evaluate every N simulated seconds.")
    eval_batches: Int = Field(default=4, ge=1, le=10_000, description="Held-out batches per evaluation.")
    eval_batch_size: Int = Field(default=32, ge=1, le=1_048_576, description="Sequences per held-out batch.")
    target_eval_loss: float | None = Field(default=None, gt=0, description="Report the simulated time at which eval loss first reaches this.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where numerics run; auto = cuda when available.")
    threads: Threads = Field(default="auto", description=(
        "CPU threads for the numerics (torch intra-op). auto: 1 for tiny models (extra threads slow them down 4-9x "
        "as soon as another process shares the cores), all the process's cores (its share, in a sweep pool) "
        "for steps above 2e10 FLOPs; OMP_NUM_THREADS, when set, wins over auto."))
    save_model: bool = Field(default=False, description=(
        "Write the final global parameters to model.pt in the run directory (torch.save of a dict by parameter "
        "name; load with build_model(...).load_state_dict(torch.load(...)))."))
    coalesce: bool = Field(default=True, description=(
        "Timing-only runs: compute a worker's steps that send and need nothing as one event (the timeline is "
        "identical, only faster; off where a token budget or failures need every step as it ends)."))
    engine: Literal["auto", "vmap", "stacked"] = Field(default="auto", description=(
        "How replicas are stepped together: vmap (torch.func over the model, any model kind) or stacked (the GPT "
        "written with a replica dimension, one batched matmul per layer and one autograd pass; gpt only). "
        "auto: stacked for gpt, vmap otherwise."))
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description=(
        "Inner forward/backward precision: bf16 runs them under torch.autocast (parameters, gradients and "
        "optimizer state stay fp32). On CPU its speed depends on the CPU's bf16 support."))
    compile: bool = Field(default=False, description=(
        "torch.compile the stacked engine's training forward (fused kernels; the first steps pay the compile, "
        "and a compile that fails falls back to eager with a warning). Stacked engine only."))
    kernels: Literal["auto", "torch", "triton"] = Field(default="auto", description=(
        "Backend of the wire-format and outer-update kernels: torch (reference), triton (needs CUDA), "
        "auto (triton on CUDA when it imports, else torch)."))
    eval_replicas: bool = Field(default=False, description=(
        "Also evaluate every replica's own parameters at each evaluation (one batched call; kind "
        "'replica_eval' in metrics.parquet, thin lines in the dashboard)."))
    memory_limit_gb: PositiveFloat | None = Field(default=None, description=(
        "Memory the numerics may use (GB); omitted: what the device has free (CUDA) or available (CPU). "
        "A scenario whose estimate exceeds it is refused before it starts."))
    on_divergence: Literal["stop", "continue"] = Field(default="stop", description=(
        "When a train or eval loss (or the global parameters at an eval) becomes NaN or inf: stop = end the run "
        "there, status 'diverged' with the step and simulated time; continue = keep simulating (the status "
        "still says diverged)."))
    divergence_loss_margin: float | None = Field(default=1.0, ge=0, allow_inf_nan=False, description=(
        "An eval loss above the uniform loss log V (V: the vocabulary) by more than this many nats counts as "
        "diverged, handled like a NaN or inf loss (run.on_divergence); null = only non-finite values count."))
    max_events: Int | None = Field(default=DEFAULT_MAX_EVENTS, ge=1, description=(
        "Refuse, before starting, a run whose estimated work (inner steps of all workers, failures, link "
        "flaps, slow periods, evaluations) exceeds this many events; null = no limit."))

    @model_validator(mode="after")
    def _stops(self) -> "Run":
        if self.max_sim_time_s is None and self.max_rounds is None and self.max_tokens is None:
            raise ValueError("set at least one of max_sim_time_s, max_rounds, max_tokens")
        return self


class TimingProxy(_Strict):
    """Time and payloads of a large model while a tiny one is trained (convergence)."""
    params: PositiveFloat = Field(le=1e15, description="Parameters of the timed model (e.g. 1.0e9): payload sizes scale to it.")
    layers: Int = Field(ge=1, le=10_000, description="Transformer layers of the timed model (per-layer compute and DDP buckets; timing-only fragments).")
    step_time_s: PositiveFloat | None = Field(default=None, description="Seconds per inner step; omitted: from compute.step_time with the proxy's parameters (flops mode: 6 x params x tokens per step / (peak x MFU x GPUs)).")
    tokens_per_step: Int | None = Field(default=None, ge=1, description="Tokens per worker per step of the timed model (flops mode); omitted: the trained model's batch_size x seq_len.")

# --------------------------------------------------------------------------- faults
class LognormalFactor(_Strict):
    kind: Literal["lognormal"] = "lognormal"
    mu: float = Field(default=0.0, ge=-10, le=10, description="Mean of log(factor) (0: median factor 1); in [-10, 10].")
    sigma: float = Field(default=0.25, ge=0, le=4, description="Standard deviation of log(factor) (sigma, not sigma^2); at most 4.")


class ParetoFactor(_Strict):
    kind: Literal["pareto"] = "pareto"
    alpha: float = Field(default=3.0, ge=0.5, le=1e6, description="Tail index: smaller = heavier tail (mean is infinite for alpha <= 1); at least 0.5, so a draw stays finite.")
    scale: PositiveFloat = Field(default=1.0, le=1e6, description="Smallest factor (x_m of the Pareto distribution).")


class EmpiricalFactor(_Strict):
    kind: Literal["empirical"] = "empirical"
    csv: str = Field(min_length=1, description=(
        "CSV file with a 'step_time_s' column of measured step times (relative to the scenario file); each step "
        "draws one row at random."))
    normalize: Literal["median", "none"] = Field(default="median", description=(
        "median: factor = drawn time / the file's median time (the node keeps its own typical step time); "
        "none: factor = drawn time in seconds (use with a 1 s base step time)."))

    def samples(self) -> list[float]:
        """The file's step times; ValueError (one line) if the file is missing or bad."""
        import csv
        import math

        p = Path(self.csv)
        text = _read_text(p)
        rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
        header = [c.strip() for c in rows[0]] if rows else []
        if "step_time_s" not in header:
            raise ValueError(f"{p.name}: the header must have a 'step_time_s' column (got {','.join(header)!r})")
        col = header.index("step_time_s")
        out = []
        for line, row in enumerate(rows[1:], start=2):
            try:
                v = float(row[col])
            except (ValueError, IndexError):
                raise ValueError(f"{p.name} line {line}: step_time_s must be a number (got {','.join(row)!r})") from None
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{p.name} line {line}: step_time_s must be finite and > 0 (got {v})")
            out.append(v)
        if not out:
            raise ValueError(f"{p.name}: needs at least one step time after the header")
        return out


FactorSpec = Annotated[Union[LognormalFactor, ParetoFactor, EmpiricalFactor], Field(discriminator="kind")]


class SlowPeriods(_Strict):
    mean_off_s: PositiveFloat = Field(description="Mean seconds at normal speed between slow periods (exponential).")
    mean_on_s: PositiveFloat = Field(description="Mean seconds a slow period lasts (exponential).")
    factor: float = Field(gt=1, le=1e6, description="Step-time multiplier while slow (2 = half speed).")


class _Where(_Strict):
    regions: list[str] = Field(default_factory=list, description="Regions this applies to; with nodes empty too: every node.")
    nodes: list[str] = Field(default_factory=list, description="Nodes ('region/i', e.g. us/0) this applies to.")


class Stragglers(_Where):
    """Per-step slowdowns: each step's time is multiplied by a factor drawn from a named stream."""
    factor: FactorSpec | None = Field(default=None, description="Distribution of the per-step time factor (lognormal, pareto, empirical).")
    scope: Literal["node", "region"] = Field(default="node", description=(
        "node: each node draws its own factors; region: a region's nodes share the draws (their k-th steps are "
        "equally slow), as a shared noisy neighbour or power cap would do."))
    slow_periods: SlowPeriods | None = Field(default=None, description="Transient slow periods per node (on/off, exponential durations).")


class DownWindow(_Strict):
    node: str = Field(description="Node ('region/i').")
    start_s: float = Field(ge=0, allow_inf_nan=False, description="Simulated time (s) the node fails.")
    end_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Simulated time (s) it is back (then fetches parameters); null = never.")


class Failures(_Where):
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
                raise _FieldError(("schedule", i, "end_s"), f"must be > start_s={w.start_s:g} (got {w.end_s:g})")
        return self


class Membership(_Strict):
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
            raise _FieldError(("leave_s",), f"must differ from join_s={self.join_s:g}")
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


class Degradation(_Strict):
    start_s: float = Field(ge=0, allow_inf_nan=False, description="Simulated time (s) the window starts.")
    end_s: float = Field(gt=0, allow_inf_nan=False, description="Simulated time (s) it ends; > start_s.")
    factor: float = Field(ge=0, le=1, description="Multiplies the link's bandwidth in the window (0 = outage).")


class LinkFault(_Strict):
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
                raise _FieldError(("degrade", self.degrade.index(w), "end_s"), f"must be > start_s={w.start_s:g} (got {w.end_s:g})")
            if prev is not None and w.start_s < prev.end_s:
                raise _FieldError(("degrade", self.degrade.index(w), "start_s"), f"windows may not overlap (previous ends at {prev.end_s:g})")
            prev = w
        return self


class Faults(_Strict):
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


class Scenario(_Strict):
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
                raise _FieldError(("algorithm",), f"unknown name {name!r}; allowed: {', '.join(known)}, "
                                  "or a plug-in (plugin: FILE.py:Class)")
            base = (info.context or {}).get("base_dir")
            try:
                spec = _plugin_method(alg, Path(base) if base else None)
            except _FieldError as err:
                raise _FieldError(("algorithm",) + tuple(err.loc), err.msg) from None
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
            raise _FieldError(("timing", "step_time_s"), "required with compute.step_time mode measured (that mode times the trained model, not the proxy)")
        if not self.numerics and self.timing is None:
            raise _FieldError(("timing",), "required when numerics is off: the timed model's params and layers, e.g. {params: 1.0e9, layers: 24}")
        if not self.numerics and self.compute.step_time.mode == "measured" and (self.timing is None or self.timing.step_time_s is None):
            raise _FieldError(("compute", "step_time", "mode"), "measured needs numerics: true (it times the real model); use fixed or flops")
        return self

    @model_validator(mode="after")
    def _fault_targets(self) -> "Scenario":
        regions = [r.name for r in self.topology.regions]
        nodes = [f"{r.name}/{i}" for r in self.topology.regions for i in range(r.nodes)]
        shown = ", ".join(nodes[:8]) + (", ..." if len(nodes) > 8 else "")

        def node(loc: tuple, name: str) -> None:
            if name not in nodes:
                raise _FieldError(("faults",) + loc, f"unknown node '{name}'; nodes are 'region/i': {shown}")

        def where(loc: tuple, w: _Where) -> None:
            for i, r in enumerate(w.regions):
                if r not in regions:
                    raise _FieldError(("faults",) + loc + ("regions", i), f"unknown region '{r}'; regions are: {', '.join(regions)}")
            for i, n in enumerate(w.nodes):
                node(loc + ("nodes", i), n)

        f = self.faults
        for n in f.node_step_time_multiplier:
            node(("node_step_time_multiplier",), n)
        for i, st in enumerate(f.stragglers):
            where(("stragglers", i), st)
            if st.factor is None and st.slow_periods is None:
                raise _FieldError(("faults", "stragglers", i), "set factor, slow_periods or both")
        if f.failures is not None:
            where(("failures",), f.failures)
            for i, w in enumerate(f.failures.schedule):
                node(("failures", "schedule", i, "node"), w.node)
        for i, m in enumerate(f.churn):
            node(("churn", i, "node"), m.node)
        links = {frozenset((l.a, l.b)) for l in self.topology.links}
        for i, l in enumerate(f.links):
            if frozenset((l.a, l.b)) not in links:
                raise _FieldError(("faults", "links", i), f"no topology link joins '{l.a}' and '{l.b}'")
        return self

    @model_validator(mode="after")
    def _engine(self) -> "Scenario":
        if self.run.engine == "stacked" and self.model.kind != "gpt":
            raise _FieldError(("run", "engine"), f"stacked needs model kind gpt (got {self.model.kind}); use auto or vmap")
        if self.run.compile and (self.run.engine == "vmap" or self.model.kind != "gpt"):
            raise _FieldError(("run", "compile"), "needs the stacked engine (model kind gpt, run.engine auto or stacked)")
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
        except _FieldError as err:
            raise _FieldError(("algorithm",) + tuple(err.loc), err.msg) from None
        return self

    @model_validator(mode="after")
    def _vocab(self) -> "Scenario":
        if isinstance(self.data, SyntheticData) and self.model.vocab_size not in (None, self.data.vocab_size):
            raise _FieldError(("model", "vocab_size"), f"must equal data.vocab_size={self.data.vocab_size} or be omitted (got {self.model.vocab_size})")
        return self


# --------------------------------------------------------------------------- errors and loading
def _model_at(loc: tuple) -> type[BaseModel] | None:
    """Walk the schema along an error location to the model that owns the last key."""
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            # a discriminated-union tag (e.g. 'diloco') names the member model
            member = _union_member(model, part)
            if member is None:
                return None
            model = member
            continue
        model = _unwrap(fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(ann: Any) -> Any:
    import typing

    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (list, tuple):
        return _unwrap(typing.get_args(ann)[0])
    if origin is Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tuple(_unwrap(a) for a in args)
    return ann


def _union_member(model: Any, tag: str) -> Any:
    members = model if isinstance(model, tuple) else ()
    for m in members:
        # a discriminator's value (not any Literal's: sparta's interval); a union may hold plain types (Literal, int)
        for key, f in getattr(m, "model_fields", {}).items():
            import typing

            if key in _TAGS and typing.get_origin(f.annotation) is Literal and tag in typing.get_args(f.annotation):
                return m
    return None


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    ctx = e.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _FieldError):
        loc = loc + tuple(inner.loc)
        msg = inner.msg
    elif e["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        allowed = ", ".join(owner.model_fields) if owner is not None else "see `locosim schema`"
        named = _field_for_symbol(owner, str(loc[-1])) if owner is not None else None
        hint = f"did you mean {named} (the paper's {loc[-1]})? " if named else ""
        msg = f"unknown key; {hint}allowed here: {allowed}"
    elif e["type"] in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator") == "_method_tag()":
        methods = ", ".join(registered())
        msg = (f"unknown name {ctx.get('tag')!r}; allowed: {methods}, or a plug-in (plugin: FILE.py:Class)"
               if e["type"] == "union_tag_invalid" else f"missing name; allowed: {methods}")
    elif e["type"] == "union_tag_invalid":
        msg = f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
    elif e["type"] == "union_tag_not_found":
        msg = f"missing {ctx.get('discriminator', 'kind').strip(chr(39))}; allowed: " + _tags_at(loc)
    elif e["type"] == "missing":
        msg = "required field is missing"
    else:
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if "input" in e and e["type"] not in ("model_type", "dict_type") and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
    path = ".".join(str(p) for p in _drop_tags(loc)) or "<top level>"
    return f"{path}: {msg}"


def _field_for_symbol(owner, key: str) -> str | None:
    """The field a paper symbol names (``H`` -> ``inner_steps``, ``tau`` -> ``overlap_steps``): the
    one whose description opens with the symbol ("H in DiLoCo: ...", "tau: ...", "eta, ..."); H is
    inner_steps in every method that has it, whatever its description says."""
    fields = getattr(owner, "model_fields", {})
    if key == "H" and "inner_steps" in fields:
        return "inner_steps"
    for name, f in fields.items():
        if re.match(rf"{re.escape(key)}(?: in |: |, )", f.description or ""):
            return name
    return None


def _tags_at(loc: tuple) -> str:
    owner = _model_at(loc[:-1])
    if owner is None:
        return "see `locosim schema`"
    import typing

    ann = owner.model_fields[loc[-1]].annotation if loc and loc[-1] in owner.model_fields else None
    members = _unwrap(ann) if ann is not None else ()
    tags = []
    for m in members if isinstance(members, tuple) else (members,):
        for f in m.model_fields.values():
            if typing.get_origin(f.annotation) is Literal:
                tags += list(typing.get_args(f.annotation))
                break
    return ", ".join(map(str, tags))


def _drop_tags(loc: tuple) -> tuple:
    """Remove discriminated-union tags that pydantic inserts into locations."""
    out: list = []
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        fields = getattr(model, "model_fields", None)
        if fields is not None and part in fields:
            out.append(part)
            model = _unwrap(fields[part].annotation)
            continue
        member = _union_member(model, part) if isinstance(model, tuple) else None
        if member is not None:
            model = member
            continue
        out.append(part)
    return tuple(out)


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a mapping into a Scenario; raise ScenarioError with a one-line message."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a YAML mapping of sections (got {type(data).__name__})")
    try:
        base = Path(source).parent if source and Path(source).is_file() else None
        return Scenario.model_validate(data, context={"base_dir": str(base) if base else None})
    except ValidationError as err:
        raise ScenarioError(_format_error(err)) from None


MAX_YAML_VALUES = 1_000_000  # values in a loaded document, counting every alias expansion
MAX_YAML_BYTES = 16 * 2**20


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a mapping naming the same key twice (YAML says keys are
    unique; PyYAML would silently keep the last one, e.g. a second ``algorithm:``)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise StrictYAMLError(
                None, None, f"duplicate key {key!r} (first at line {first}); each key may appear once in a mapping",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


class StrictYAMLError(yaml.constructor.ConstructorError):
    """YAML that PyYAML would read but we refuse: a duplicate key, an ambiguous integer."""


_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9_]*)")


def _construct_strict_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """Integers are strict: ``010`` (YAML 1.1 reads it as octal 8, YAML 1.2 as 10) and ``1:30``
    (sexagesimal, 90) are refused rather than read as a number the writer did not mean;
    decimal, ``0x``, ``0o`` and ``0b`` forms are read as written."""
    text = str(node.value)
    plain = text.replace("_", "")
    if _DECIMAL.fullmatch(text) or re.fullmatch(r"[-+]?0(x[0-9a-fA-F]+|o[0-7]+|b[01]+)", plain):
        return loader.construct_yaml_int(node) if not plain.lstrip("+-").startswith("0o") else int(plain, 8)
    raise StrictYAMLError(None, None, f"the integer {text!r} is ambiguous (YAML 1.1 reads a leading 0 as octal and "
                          "a:b as base 60); write it in plain decimal, or quote it for a string", node.start_mark)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_strict_int)


def _kind_of(value: Any) -> str:
    import datetime as dt

    if isinstance(value, (dt.date, dt.datetime)):
        return f"a date ({value.isoformat()})"
    if isinstance(value, (bytes, bytearray)):
        return "binary data (!!binary)"
    if isinstance(value, (set, frozenset)):
        return "a set (!!set)"
    return f"a {type(value).__name__}"


def check_plain(data: Any, path: tuple = (), source: str | None = None) -> None:
    """Refuse (ScenarioError, one line) YAML data that is not plain JSON-like values -- dates,
    ``!!binary``, ``!!set`` -- or that expands (through aliases) to more than MAX_YAML_VALUES
    values, before anything copies it. ``path``: where ``data`` sits in the scenario;
    ``source``: what to name when the whole document is too large (its file)."""
    count = 0
    stack: list[tuple[Any, tuple]] = [(data, tuple(path))]
    while stack:
        value, at = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ScenarioError(f"{source or '.'.join(map(str, path)) or '<top level>'}: the document expands to more "
                                f"than {MAX_YAML_VALUES:,} values (YAML aliases repeated inside each other?); "
                                "write the scenario out plainly")
        dotted = ".".join(str(p) for p in at) or "<top level>"
        if isinstance(value, dict):
            for k, v in value.items():
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    raise ScenarioError(f"{dotted}: a key is {_kind_of(k)}; keys are strings")
                stack.append((v, at + (k,)))
        elif isinstance(value, list):
            stack.extend((v, at + (i,)) for i, v in enumerate(value))
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            raise ScenarioError(f"{dotted}: {_kind_of(value)} is not a string, number, boolean, list or mapping; "
                                "quote it to make it a string")


def load_yaml_text(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load`` but refusing duplicate keys (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        if p.exists() and not p.is_dir() and not p.is_file():  # /dev/zero, a pipe: would be read for ever
            raise ScenarioError(f"{p}: not a regular file (a device, pipe or socket); a scenario is a YAML file")
        if p.is_file() and p.stat().st_size > MAX_YAML_BYTES:
            raise ScenarioError(f"{p}: {p.stat().st_size:,} bytes; a scenario file may have at most "
                                f"{MAX_YAML_BYTES:,}")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise ScenarioError(f"{p}: cannot read as a UTF-8 text file ({type(err).__name__})") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise ScenarioError(f"{p}: not valid YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as err:  # e.g. a timestamp like 2024-13-45, or nesting too deep
        first = str(err).splitlines()[0] if str(err) else ""
        raise ScenarioError(f"{p}: not valid YAML: {type(err).__name__}: {first}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: a scenario must be a YAML mapping of sections (got {type(data).__name__})")
    check_plain(data, source=str(p))
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested mapping copy."""
    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"--set {item}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ScenarioError(f"--set {item}: empty key in path")
        try:
            value = load_yaml_text(raw)
        except StrictYAMLError as err:  # a duplicate key or an ambiguous integer: not a string to fall back to
            raise ScenarioError(f"--set {item}: {err.problem}") from None
        except (yaml.YAMLError, ValueError, RecursionError):
            value = raw
        check_plain(value, tuple(parts), source=f"--set {key}")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(f"--set {key}: '{part}' is not an index of a list of {len(node)} items")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ScenarioError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a section")
    return data


_TAGS = ("name", "kind", "mode")  # discriminators: a section that changes one is replaced, not merged
# A variant name becomes a directory (OUT/<name>/) and part of sweep run ids: one path component,
# never "." or ".." (which would write over or outside OUT), never hidden or flag-like.
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def merge_variant(base: Any, patch: Any) -> Any:
    """Deep-merge a variant's sections into the base scenario data (a copy).

    Mappings merge key by key; any other value replaces. A section whose discriminator
    (``name`` of the algorithm, ``kind`` of model/data, ``mode`` of step_time) differs
    from the base's is replaced whole, so a noloco variant does not inherit DiLoCo knobs.
    """
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return json.loads(json.dumps(patch))
    if any(t in patch and t in base and patch[t] != base[t] for t in _TAGS):
        return json.loads(json.dumps(patch))
    out = json.loads(json.dumps(base))
    for k, v in patch.items():
        out[k] = merge_variant(out[k], v) if k in out else json.loads(json.dumps(v))
    return out


def _variant_overrides(variants: Any, overrides: list[str]) -> tuple[Any, list[str]]:
    """Split off ``variants.NAME.key.path=value`` overrides and apply them to NAME's block of
    ``variants:`` (as if the file said so, before the merge); return the variants and the
    other overrides (which apply to every variant after the merge)."""
    rest, mine = [], []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        (mine if key == "variants" or key.startswith("variants.") else rest).append(item)
    for item in mine:
        key = item.split("=", 1)[0].strip()
        name = key.split(".")[1] if key.count(".") >= 1 else ""
        if not isinstance(variants, dict):
            raise ScenarioError(f"--set {key}: this file has no variants: section "
                                "(a mapping of variant name -> sections)")
        if not name:
            raise ScenarioError(f"--set {key}: name a variant, e.g. variants.NAME.algorithm.inner_steps=50; "
                                f"variants: {', '.join(map(str, variants))}")
        if name not in variants:
            raise ScenarioError(f"--set {key}: no variant '{name}'; variants: {', '.join(map(str, variants))}")
        variants = apply_overrides({"variants": variants}, [item])["variants"]
    return variants, rest


def _has_path(data: Any, keys: list[str]) -> bool:
    """Whether the dotted path ``keys`` names a value written in ``data`` (dicts, list indices)."""
    for k in keys:
        if isinstance(data, dict) and k in data:
            data = data[k]
        elif isinstance(data, list) and k.isdigit() and int(k) < len(data):
            data = data[int(k)]
        else:
            return False
    return True


def _variant_error(msg: str, name: str, patch: dict, base: dict, overrides: list[str] = (),
                   grid: list[str] = ()) -> str:
    """Blame the section that holds the bad value: the variant's block when the field's path is
    written there (``variants.NAME: path: ...``), else the base section every variant inherits
    (``path: ... (base section, inherited by variant NAME)``), not a variant that never wrote it."""
    path = msg.split(": ", 1)[0]
    keys = path.split(".") if path and path != "<top level>" else []
    if keys and not _has_path(patch, keys):
        for flag, items in (("--grid", grid), ("--set", overrides)):  # a sweep's grid point is not a --set
            keys = [o.split("=", 1)[0].strip() for o in items]
            if any(path == k or path.startswith(k + ".") or k.startswith(path + ".") for k in keys):
                return f"{msg} (from {flag}, applied to variant {name})"
        if _has_path(base, keys):
            return f"{msg} (in the base section, inherited by variant {name})"
    return f"variants.{name}: {msg}"


def load_variants(path: str | Path, overrides: list[str] | None = None,
                  default_run: dict | None = None, grid: list[str] | None = None) -> list[tuple[str | None, Scenario]]:
    """The scenarios a file describes: one (None, scenario) without ``variants:``; else one
    (variant name, scenario) per entry of ``variants:`` (name -> sections merged into the
    base). ``--set variants.NAME.key=value`` edits NAME's block before the merge; other
    ``--set`` overrides apply to every variant after the merge. ``default_run``: the ``run:``
    section of a scenario that has none (``locosim bandwidth`` sets its own run)."""
    data = read_yaml(path)
    data.pop("sweep", None)  # read by `locosim sweep` (sim.sweep); a single run ignores it
    grid = list(grid or [])  # a sweep's grid point (key.path=value), applied after the --set overrides
    variants, overrides = _variant_overrides(data.pop("variants", None), overrides or [])
    set_only, overrides = overrides, overrides + grid

    def with_run(d: dict) -> dict:
        return {**d, "run": dict(default_run)} if default_run is not None and "run" not in d else d

    if variants is None:
        return [(None, _finish(parse_scenario(apply_overrides(with_run(data), overrides), str(path)), path))]
    if not isinstance(variants, dict) or not variants:
        raise ScenarioError("variants: must be a non-empty mapping of variant name -> sections to change")
    out = []
    for name, patch in variants.items():
        if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
            shown = name if isinstance(name, str) and re.fullmatch(r"\w+", name) else json.dumps(str(name))
            raise ScenarioError(f"variants.{shown}: a variant name becomes a directory name: 1-64 letters, "
                                "digits, _ . - starting with a letter, digit or _")
        if not isinstance(patch, dict):
            raise ScenarioError(f"variants.{name}: must be a mapping of sections to change (got {type(patch).__name__})")
        merged = merge_variant(data, patch)
        merged.setdefault("name", "scenario")
        if "name" not in patch:
            merged["name"] = f"{merged['name']}-{name}"
        try:
            sc = parse_scenario(apply_overrides(with_run(merged), overrides), str(path))
        except ScenarioError as err:
            raise ScenarioError(_variant_error(str(err), name, patch, data, set_only, grid)) from None
        out.append((name, _finish(sc, path)))
    return out


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """One scenario from a file; a file with ``variants:`` gives its first variant."""
    return load_variants(path, overrides)[0][1]


def _finish(sc: Scenario, path: str | Path) -> Scenario:
    """Resolve paths in a parsed scenario relative to its file."""
    if isinstance(sc.data, TextData):
        p = Path(sc.data.path)
        if not p.is_absolute():
            p = (Path(path).parent / p).resolve()
        if not p.exists():
            raise ScenarioError(f"data.path: no such file {str(p)!r}")
        if not p.is_file():  # a directory, /dev/zero, a pipe: never read for ever
            raise ScenarioError(f"data.path: {str(p)!r} is not a regular file (a directory, device or pipe); "
                                "name a UTF-8 text file")
        sc = sc.model_copy(update={"data": sc.data.model_copy(update={"path": str(p)})})
    sc = Link._resolve_csv_paths(sc, Path(path).parent)
    sc = _resolve_fault_csvs(sc, Path(path).parent)
    from sim.paths import resolve_path_args

    for section in ("model", "data"):  # plug-in files and Path-typed args, relative to the scenario file
        spec = getattr(sc, section)
        if spec.kind == "plugin":
            ref = loader.resolve_ref(spec.plugin, Path(path).parent)
            try:
                args = resolve_path_args(section, ref, spec.args, Path(path).parent)
            except ValueError as err:  # the plug-in cannot be loaded: its one line
                raise ScenarioError(str(err).splitlines()[0]) from None
            sc = sc.model_copy(update={section: spec.model_copy(update={"plugin": ref, "args": args})})
    return sc


def _resolve_fault_csvs(sc: Scenario, base_dir: Path) -> Scenario:
    """Make every empirical straggler CSV path absolute (relative to base_dir) and check that it parses."""
    stragglers = list(sc.faults.stragglers)
    for i, st in enumerate(stragglers):
        if not isinstance(st.factor, EmpiricalFactor):
            continue
        p = Path(st.factor.csv)
        p = p if p.is_absolute() else (base_dir / p).resolve()
        factor = st.factor.model_copy(update={"csv": str(p)})
        try:
            factor.samples()
        except ValueError as err:
            raise ScenarioError(f"faults.stragglers.{i}.factor.csv: {err}") from None
        stragglers[i] = st.model_copy(update={"factor": factor})
    if stragglers == list(sc.faults.stragglers):
        return sc
    return sc.model_copy(update={"faults": sc.faults.model_copy(update={"stragglers": stragglers})})


def json_schema() -> dict:
    """The scenario's JSON Schema (for editors): built-in methods, every method shipped or
    installed as a plug-in (``sim.algorithms.registered``: its class's ``Spec``, with its name as a
    constant) and the generic plug-in section; variants and sweep."""
    schema = Scenario.model_json_schema()
    _add_plugin_methods(schema)
    schema.setdefault("properties", {})["variants"] = {
        "type": "object", "additionalProperties": {"type": "object"},
        "propertyNames": {"pattern": _VARIANT_NAME.pattern},
        "description": "Optional: variant name -> sections merged into this scenario; `locosim run` runs each "
                       "into its own subdirectory (e.g. one variant per method)."}
    schema["properties"]["sweep"] = {
        "type": "object", "description": "Optional, for `locosim sweep`: grid (key.path -> list of values) and seeds.",
        "properties": {"grid": {"type": "object", "additionalProperties": {"type": "array"}},
                       "seeds": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
        "additionalProperties": False}
    return schema



def method_schema(spec: type[BaseModel], name: str | None = None) -> dict:
    """A plug-in method's knobs (its ``Spec``) as JSON Schema; ``name``, when the method is
    registered under one (``locosim.algorithms`` entry point or packaged), is the constant the
    section's ``name`` must be."""
    sub = spec.model_json_schema(ref_template="#/$defs/{model}")
    if name is not None:
        sub["properties"]["name"] = {"const": name, "default": name, "title": "Name", "type": "string"}
        sub["required"] = ["name"]
    return sub


def _add_plugin_methods(schema: dict) -> None:
    """Put each registered plug-in method's knobs into the algorithm section's choices. They
    become ``anyOf``: the generic plug-in section (any name) overlaps the named ones. A
    registered method that cannot be loaded is left out (``validate`` names its error)."""
    alg = schema["properties"]["algorithm"]
    choices = alg.pop("oneOf")
    defs = schema.setdefault("$defs", {})
    named = []
    for name, ref in registered().items():
        if name in METHOD_SECTIONS:
            continue
        try:
            spec = method_class(ref).Spec
        except loader.PluginError:
            continue
        sub = method_schema(spec, name)
        defs.update(sub.pop("$defs", {}))
        key = f"plugin_{name}"
        defs[key] = sub
        named.append({"$ref": f"#/$defs/{key}"})
    alg["anyOf"] = choices[:-1] + named + choices[-1:]
