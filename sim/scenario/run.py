"""How a run goes: the ``compute:`` section (how long an inner step takes in virtual time, the
batch), the optional ``timing:`` proxy (step times and payloads of a larger model than the one
trained) and the ``run:`` section (when the run stops, evaluations, where and how the numerics run).

Apart from what is trained (``sim.scenario.training``): these sections set virtual time and the
run's limits, not the numbers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from sim.algorithms.knobs import Int, PositiveFloat
from sim.scenario.base import StrictModel
from sim.hardware import GPU_PEAK_FLOPS
from sim.scenario.topology import GpuName

DEFAULT_MAX_EVENTS = 100_000_000  # run.max_events: beyond it the clock itself would take too long


# --------------------------------------------------------------------------- compute
class FixedStepTime(StrictModel):
    mode: Literal["fixed"] = "fixed"
    step_time_s: PositiveFloat = Field(le=1e6, description="Seconds per inner step (forward + backward + optimizer) at multiplier 1.")


class FlopsStepTime(StrictModel):
    mode: Literal["flops"] = "flops"
    gpu: GpuName = Field(default="H100", description=f"Default GPU where a region names none; one of: {', '.join(GPU_PEAK_FLOPS)}.")
    mfu: float = Field(default=0.4, gt=0, le=1, description="Model FLOPs utilization.")
    gpus_per_node: Int = Field(default=1, ge=1, description="GPUs per node (one replica spans a node).")


class MeasuredStepTime(StrictModel):
    mode: Literal["measured"] = "measured"
    repeats: Int = Field(default=5, ge=1, description="Timed steps after warm-up; the median is used. Not reproducible run to run.")


StepTimeSpec = Annotated[Union[FixedStepTime, FlopsStepTime, MeasuredStepTime], Field(discriminator="mode")]


class Compute(StrictModel):
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


class Run(StrictModel):
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
        "Timing-only runs: a worker wakes only to send or at a need not yet met, computing the steps between as "
        "one event (the timeline is identical, only faster; off where a token budget or failures need every step "
        "as it ends)."))
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


class TimingProxy(StrictModel):
    """Time and payloads of a large model while a tiny one is trained (convergence)."""
    params: PositiveFloat = Field(le=1e15, description="Parameters of the timed model (e.g. 1.0e9): payload sizes scale to it.")
    layers: Int = Field(ge=1, le=10_000, description="Transformer layers of the timed model (per-layer compute and DDP buckets; timing-only fragments).")
    step_time_s: PositiveFloat | None = Field(default=None, description="Seconds per inner step; omitted: from compute.step_time with the proxy's parameters (flops mode: 6 x params x tokens per step / (peak x MFU x GPUs)).")
    tokens_per_step: Int | None = Field(default=None, ge=1, description="Tokens per worker per step of the timed model (flops mode); omitted: the trained model's batch_size x seq_len.")
