"""Knobs every method section shares, as small pydantic mix-ins (imports only pydantic and
``kernels.formats``): strict integers, finite positive floats, the wire format of a payload,
the collective and timeout of a sync, and the outer optimizer's warm start / error feedback /
grain. Each method's module declares its own section from these (``Spec``); the scenario
schema is generated from the registry (``sim.algorithms.METHODS``), never from a list here.

A validator that points at one of its fields raises ``FieldError(loc, msg)``: the scenario
turns it into the usual one-line ``algorithm.FIELD: msg``.
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import AfterValidator, AllowInfNan, BaseModel, ConfigDict, Field, Strict, model_validator


class FieldError(ValueError):
    """Raised inside validators to point at a sub-field; turned into a located message."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


class Section(BaseModel):
    """A strict, frozen section: unknown keys are errors that list the valid ones. In every
    section (a built-in's or a plug-in's) a field typed ``int`` is strict (``true`` or ``2.5``
    is not read as a count) and one typed ``float`` is finite (``.inf`` and ``.nan`` refused),
    whether or not its author said so."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for f in cls.model_fields.values():
            kinds = set(typing.get_args(f.annotation)) - {type(None)} or {f.annotation}
            if kinds == {int} and not any(isinstance(m, Strict) for m in f.metadata):
                f.metadata.append(Strict())
                changed = True
            elif kinds == {float} and not any(isinstance(m, AllowInfNan) for m in f.metadata):
                f.metadata.append(AllowInfNan(False))
                changed = True
        if changed:
            cls.model_rebuild(force=True)


# Integers are strict: `true` or `2.5` is not silently read as a count.
Int = Annotated[int, Strict()]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _known_wire_format(fmt: str) -> str:
    from kernels.formats import parse_format  # torch-free: sizes only

    return str(parse_format(fmt))


# fp32 | bf16 | fp16 | int8[:B] | fp8[:B] | e3m0[:B] (B also 'tensor') | topk[:f]: bytes and layout in kernels/formats.py
WireDtype = Annotated[str, AfterValidator(_known_wire_format)]


SYNC_TIMEOUT_DOC = (
    "Seconds a collective waits, from its first arrival, for the rest of its group; then it runs over those "
    "that arrived: late workers' contributions are dropped and the average is re-weighted over those present "
    "(a dropped worker keeps its own params, as in the DiLoCo paper's drop experiment). null = barrier: wait for "
    "every member that is up (a member that is down is never waited for).")


ALLREDUCE_DOC = (
    "Collective that averages the payload (sim/engine/collectives.py): ring_allreduce (pipelined ring), "
    "ring_allreduce_stepwise, tree_allreduce (binomial), hierarchical_allreduce (in-region reduce, per-shard "
    "rings across regions), parameter_server (star around the first worker).")
AllReduceName = Literal["ring_allreduce", "ring_allreduce_stepwise", "tree_allreduce", "hierarchical_allreduce",
                        "parameter_server"]


class OuterKnobs(Section):
    """What every outer method shares: warm start, wire format and error feedback of its payload,
    grain and timeout of its syncs."""
    warm_start_steps: Int = Field(default=0, ge=0, description="Inner steps of ddp before the method takes over (the DiLoCo paper starts from a pretrained model).")
    payload_dtype: WireDtype = Field(default="fp32", description="Wire format of pseudo-gradients, averaged in fp32: fp32, bf16, fp16, int8[:B], fp8[:B], e3m0[:B] (B: block size with one fp32 scale each, default 128; B = tensor: one scale for the whole payload, e.g. e3m0:tensor) or topk[:f] (fraction kept, default 0.01).")
    error_feedback: bool = Field(default=False, description="Carry each worker's quantization error (what it meant to send minus what was received) into its next payload (lossy formats only).")
    sync_grain: Literal["layer", "step"] = Field(default="layer", description=(
        "Grain of an outer sync: layer = each layer's payload leaves as soon as its backward is done at the sync "
        "step and the step that needs the result waits only at the forward of a layer still on the wire (the "
        "DiLoCo papers' compute-utilization model); step = one send after the step and the whole next step "
        "waits for it. Timing only; the math is the same."))
    sync_timeout_s: PositiveFloat | None = Field(default=None, description=SYNC_TIMEOUT_DOC)

    @model_validator(mode="after")
    def _error_feedback(self) -> "OuterKnobs":
        if self.error_feedback and self.payload_dtype == "fp32":
            raise FieldError(("error_feedback",), "needs a lossy payload_dtype (fp32 loses nothing to feed back)")
        return self


class MethodSpec(Section):
    """Knobs of a plug-in method (``sim.algorithms.plugins``): a user's method declares its own
    as a subclass of this (pydantic fields with defaults and a description naming the paper
    symbol), and gets the built-in knobs' one-line errors and ``--set`` support."""
    name: str = Field(min_length=1, description="The method's name (shown in reports).")
    plugin: str | None = Field(default=None, description=(
        "Where the method's class is: FILE.py:Class (relative to the scenario file; FILE.py alone takes its "
        "METHOD), package.module:Class, or omitted for a method an installed package registers under the "
        "`locosim.algorithms` entry point."))
    sync_timeout_s: PositiveFloat | None = Field(default=None, description=SYNC_TIMEOUT_DOC)


class OuterMethodSpec(MethodSpec, OuterKnobs):
    """Knobs of a plug-in built on ``sim.algorithms.common.OuterMethod`` (warm start, wire
    format, error feedback, grain and collective of its syncs), to extend with its own."""
    collective: AllReduceName = Field(default="ring_allreduce", description=ALLREDUCE_DOC)
