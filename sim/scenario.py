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
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator


class ScenarioError(ValueError):
    """Bad scenario input; ``str(err)`` is one line naming the field and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Integers are strict: `true` or `2.5` is not silently read as a count.
Int = Annotated[int, Strict()]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

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


# --------------------------------------------------------------------------- topology
class Region(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Region name, referenced by links (letters, digits, _ . -).")
    nodes: Int = Field(ge=1, description="Number of GPU nodes (one worker / replica each) in this region.")
    gpu: GpuName | None = Field(default=None, description=(
        f"GPU name, used by compute.step_time mode 'flops' for its peak FLOP/s; one of: {', '.join(GPU_PEAK_FLOPS)}."))
    step_time_multiplier: PositiveFloat = Field(
        default=1.0, description="Multiplies every step time of this region's nodes (1 = reference speed; 2 = half as fast).")


class LinkSpec(_Strict):
    bandwidth_gbps: float = Field(gt=0, description="Bandwidth in Gbit/s, each direction (full duplex); .inf allowed.")
    latency_s: float = Field(ge=0, allow_inf_nan=False, description="One-way latency in seconds.")


class Link(LinkSpec):
    a: str = Field(description="Region at one end.")
    b: str = Field(description="Region at the other end.")


class Topology(_Strict):
    regions: list[Region] = Field(min_length=1, description="Regions of GPU nodes.")
    links: list[Link] = Field(default_factory=list, description="WAN links between regions (full duplex).")
    intra_region: LinkSpec = Field(
        default=LinkSpec(bandwidth_gbps=100.0, latency_s=1e-4),
        description="Link from each node to its region's switch (bandwidth each direction, latency).")

    @model_validator(mode="after")
    def _check(self) -> "Topology":
        names = [r.name for r in self.regions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _FieldError(("regions",), f"region names must be unique; repeated: {', '.join(dup)}")
        for i, link in enumerate(self.links):
            for end in ("a", "b"):
                name = getattr(link, end)
                if name not in names:
                    raise _FieldError(("links", i, end), f"unknown region '{name}'; regions are: {', '.join(names)}")
            if link.a == link.b:
                raise _FieldError(("links", i, "b"), "a link must join two different regions")
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


# --------------------------------------------------------------------------- model
class GPTModel(_Strict):
    kind: Literal["gpt"] = "gpt"
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    d_model: Int = Field(default=64, ge=4, description="Embedding width.")
    n_layers: Int = Field(default=2, ge=1, description="Transformer blocks (L).")
    n_heads: Int = Field(default=4, ge=1, description="Attention heads; must divide d_model.")
    seq_len: Int = Field(default=64, ge=2, description="Context length in tokens.")
    mlp_ratio: Int = Field(default=4, ge=1, description="MLP hidden width = mlp_ratio x d_model.")

    @model_validator(mode="after")
    def _heads(self) -> "GPTModel":
        if self.d_model % self.n_heads:
            raise _FieldError(("n_heads",), f"must divide d_model={self.d_model} (got {self.n_heads})")
        return self


class MLPModel(_Strict):
    kind: Literal["mlp"] = "mlp"
    vocab_size: Int | None = Field(default=None, ge=2, description="Vocabulary size; default: taken from the data.")
    d_model: Int = Field(default=32, ge=2, description="Embedding width per context token.")
    hidden: Int = Field(default=128, ge=1, description="Hidden width.")
    context: Int = Field(default=3, ge=1, description="Previous tokens the MLP sees.")
    seq_len: Int = Field(default=32, ge=2, description="Tokens per training sequence.")


ModelSpec = Annotated[Union[GPTModel, MLPModel], Field(discriminator="kind")]


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
            raise _FieldError(("order",), "(vocab_size - topics) ** order must be <= 2,000,000 contexts")
        return self


class TextData(_Strict):
    kind: Literal["text"] = "text"
    path: str = Field(description="Local UTF-8 text file, trained on character by character (relative to the scenario file).")
    eval_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="Tail fraction of the file held out for eval.")
    shards: Literal["iid", "non_iid"] = Field(default="iid", description="iid: random windows anywhere; non_iid: worker i reads only its contiguous slice.")


DataSpec = Annotated[Union[SyntheticData, TextData], Field(discriminator="kind")]


# --------------------------------------------------------------------------- optimizer
class InnerOptimizer(_Strict):
    name: Literal["adamw", "sgd"] = Field(default="adamw", description="Inner optimizer (each replica keeps its own state).")
    lr: PositiveFloat = Field(default=3e-3, description="Inner learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="Decoupled weight decay (AdamW).")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: PositiveFloat = Field(default=1e-8, description="AdamW epsilon.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip each replica's gradient to this global norm; null = off.")


# --------------------------------------------------------------------------- algorithms
WireDtype = Literal["fp32", "bf16", "fp16"]


class DDPAlgorithm(_Strict):
    name: Literal["ddp"] = "ddp"
    payload_dtype: WireDtype = Field(default="fp32", description="Dtype of gradients on the wire.")


class DiLoCoAlgorithm(_Strict):
    name: Literal["diloco"] = "diloco"
    inner_steps: Int = Field(default=500, ge=1, description="H in DiLoCo: inner steps between outer syncs.")
    outer_lr: float = Field(default=0.7, gt=0, description="eta, outer Nesterov learning rate (DiLoCo default 0.7).")
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="mu, outer Nesterov momentum (DiLoCo default 0.9).")
    nesterov: bool = Field(default=True, description="Nesterov form v = mu v + delta; theta -= lr (delta + mu v). False: heavy ball theta -= lr v.")
    payload_dtype: WireDtype = Field(default="fp32", description="Dtype of pseudo-gradients on the wire (averaged in fp32).")


AlgorithmSpec = Annotated[Union[DDPAlgorithm, DiLoCoAlgorithm], Field(discriminator="name")]


# --------------------------------------------------------------------------- compute
class FixedStepTime(_Strict):
    mode: Literal["fixed"] = "fixed"
    step_time_s: PositiveFloat = Field(description="Seconds per inner step (forward + backward + optimizer) at multiplier 1.")


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
    batch_size: Int = Field(default=16, ge=1, description="Sequences per worker per inner step.")


# --------------------------------------------------------------------------- run
class Run(_Strict):
    max_sim_time_s: PositiveFloat | None = Field(default=None, description="Stop after this much simulated time.")
    max_rounds: Int | None = Field(default=None, ge=1, description="Stop after this many syncs (outer steps; ddp: steps).")
    max_tokens: Int | None = Field(default=None, ge=1, description="Stop after this many training tokens over all workers.")
    eval_every_steps: Int | None = Field(default=None, ge=1, description="Evaluate the global model every N inner steps of worker 0.")
    eval_every_s: PositiveFloat | None = Field(default=None, description="Evaluate every N simulated seconds.")
    eval_batches: Int = Field(default=4, ge=1, description="Held-out batches per evaluation.")
    eval_batch_size: Int = Field(default=32, ge=1, description="Sequences per held-out batch.")
    target_eval_loss: float | None = Field(default=None, gt=0, description="Report the simulated time at which eval loss first reaches this.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where numerics run; auto = cuda when available.")

    @model_validator(mode="after")
    def _stops(self) -> "Run":
        if self.max_sim_time_s is None and self.max_rounds is None and self.max_tokens is None:
            raise ValueError("set at least one of max_sim_time_s, max_rounds, max_tokens")
        return self


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
    run: Run

    @model_validator(mode="after")
    def _vocab(self) -> "Scenario":
        if isinstance(self.data, SyntheticData) and self.model.vocab_size not in (None, self.data.vocab_size):
            raise _FieldError(("model", "vocab_size"), f"must equal data.vocab_size={self.data.vocab_size} or be omitted (got {self.model.vocab_size})")
        return self


# --------------------------------------------------------------------------- errors and loading
class _FieldError(ValueError):
    """Raised inside validators to point at a sub-field; turned into a located message."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


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
        return args[0] if len(args) == 1 else tuple(_unwrap(a) for a in args)
    return ann


def _union_member(model: Any, tag: str) -> Any:
    members = model if isinstance(model, tuple) else ()
    for m in members:
        for f in m.model_fields.values():
            import typing

            if typing.get_origin(f.annotation) is Literal and tag in typing.get_args(f.annotation):
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
        msg = f"unknown key; allowed here: {allowed}"
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
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_error(err)) from None


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise ScenarioError(f"{p}: cannot read as a UTF-8 text file ({type(err).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise ScenarioError(f"{p}: not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: a scenario must be a YAML mapping of sections (got {type(data).__name__})")
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
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
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


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    data = apply_overrides(read_yaml(path), overrides or [])
    sc = parse_scenario(data, str(path))
    if isinstance(sc.data, TextData):
        p = Path(sc.data.path)
        if not p.is_absolute():
            p = (Path(path).parent / p).resolve()
        if not p.is_file():
            raise ScenarioError(f"data.path: no such file {str(p)!r}")
        sc = sc.model_copy(update={"data": sc.data.model_copy(update={"path": str(p)})})
    return sc


def json_schema() -> dict:
    return Scenario.model_json_schema()

