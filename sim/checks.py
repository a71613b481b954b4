"""Every check a run makes before it starts work, in one function.

``locosim validate`` and ``Simulation`` both call ``check_before_work``, so a file that
``validate`` accepts is one that ``run`` starts (and ``validate --schema-only`` stops after
the schema). Nothing here allocates what it checks: the memory estimate is made from the
model's shapes on torch's meta device, text data is read but not tokenized, and the amount
of work is estimated from the scenario's numbers (``estimate_events``) rather than found out
by running for ever.

Checked, in order, each failure a ``ValueError`` whose message is one line naming the field:
the work estimate against ``run.max_events`` (what a step costs is the method's to say); that
the method, configured as the run will, has set its ``info`` (a plug-in's); then, when numerics
are on, the data (a text file that is missing, not UTF-8, empty or too short; a data plug-in's
``vocab_size`` and its first train and eval batch: ``[b, seq_len + 1]``, int64, ids below
``vocab_size``), the model's vocabulary against the data's, ``run.device`` (cuda without CUDA),
the memory estimate against ``run.memory_limit_gb`` or the memory there is (a plug-in model's
forward traced on the meta device), the model's forward and backward under the replica engine
that will train it (vmap, on the meta device), and ``run.kernels`` (triton without CUDA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventEstimate:
    """Rough count of what a run will simulate, by source (field path -> events)."""
    steps_per_worker: float | None
    duration_s: float | None  # simulated seconds: max_sim_time_s, else a lower bound from the compute alone
    terms: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.terms.values()))

    def largest(self) -> tuple[str, float]:
        return max(self.terms.items(), key=lambda kv: kv[1]) if self.terms else ("", 0.0)


@dataclass
class Prework:
    """What the checks found: reused by ``Simulation`` so nothing is computed twice."""
    events: EventEstimate
    device: Any = None   # torch.device when numerics are on
    memory: Any = None   # sim.training.memory.MemoryEstimate
    vocab: int | None = None
    n_params: int | None = None
    dataset: Any = None  # a data plug-in's object, built once: the run uses this one


def _layers(sc) -> int:
    if sc.timing is not None:
        return sc.timing.layers
    return getattr(sc.model, "n_layers", 1)


def _step_times(sc, n_params: int | None) -> tuple[float, float] | None:
    """(fastest, slowest) seconds per inner step over the nodes before stragglers, or None
    when only the device can tell (``measured`` mode)."""
    from sim.steptime import base_step_time_s

    if sc.timing is not None and sc.timing.step_time_s is not None:
        bases = {None: sc.timing.step_time_s}
    elif sc.compute.step_time.mode == "measured":
        return None
    else:
        params = int(sc.timing.params) if sc.timing is not None else n_params
        if params is None and sc.compute.step_time.mode == "flops":  # the trained model's size: not known yet
            return None
        tokens = sc.compute.batch_size * sc.model.seq_len
        if sc.timing is not None and sc.timing.tokens_per_step:
            tokens = sc.timing.tokens_per_step
        bases = {r.gpu: base_step_time_s(sc.compute.step_time, params, tokens, r.gpu) for r in sc.topology.regions}
    node_mult = list(sc.faults.node_step_time_multiplier.values())
    times = [bases.get(r.gpu, bases.get(None)) * r.step_time_multiplier for r in sc.topology.regions]
    lo = min(times) * min(node_mult + [1.0])
    hi = max(times) * max(node_mult + [1.0])
    return lo, hi


def _selected(sc, where) -> int:
    """Nodes a faults selector picks: its regions' and its named nodes (neither: every node)."""
    if not (where.regions or where.nodes):
        return sc.topology.n_workers
    return sum(r.nodes if r.name in where.regions else sum(f"{r.name}/{i}" in where.nodes for i in range(r.nodes))
               for r in sc.topology.regions)


def estimate_events(sc, n_params: int | None = None) -> EventEstimate:
    """How many events a run will simulate, roughly, by source: inner steps of all workers
    (times what a step costs the method: ``Algorithm.events_per_step`` counts its collective
    parts, one per layer at layer grain, spread over a round), random failures, link flaps, slow
    periods and evaluations (numerics on: the first and last, every ``eval_every_steps`` steps
    and every ``eval_every_s`` seconds, each weighted by its work in inner-step batches). Steps
    per worker come from the stop conditions (the first one reached); the simulated duration is ``run.max_sim_time_s``, else the compute time alone (a lower
    bound: the estimate errs low, so only runs that clearly cannot finish are refused).
    A failure-bound run needs its compute time *up*: up time ~ Exp(mtbf_s) between failures,
    so finishing takes about compute time / mtbf_s failures per node."""
    from sim.algorithms import algorithm_class

    run, n = sc.run, sc.topology.n_workers
    a = sc.algorithm
    method = algorithm_class(a)  # what a step and a round cost is the method's to say
    steps: list[tuple[float, str]] = []
    H = method.steps_per_round(a)
    warm = method.warm_steps(a)
    if run.max_rounds is not None:
        steps.append((warm + run.max_rounds * H,
                      "algorithm.warm_start_steps" if warm > run.max_rounds * H else "run.max_rounds"))
    if run.max_tokens is not None:
        tokens = sc.compute.batch_size * sc.model.seq_len
        steps.append((math.ceil(run.max_tokens / (tokens * n)), "run.max_tokens"))
    times = _step_times(sc, n_params)
    if run.max_sim_time_s is not None and times is not None:
        steps.append((run.max_sim_time_s / times[0], "run.max_sim_time_s"))
    s, s_field = min(steps) if steps else (None, "")
    terms: dict[str, float] = {}
    per_step = method.events_per_step(a, _layers(sc))
    if s is not None:
        terms[s_field] = float(s) * n * per_step
    work_s = s * times[1] if (s is not None and times is not None) else None
    duration = run.max_sim_time_s if run.max_sim_time_s is not None else work_s
    f = sc.faults
    if f.failures is not None and f.failures.mtbf_s is not None:
        k = _selected(sc, f.failures)
        bounds = []
        if run.max_sim_time_s is not None:
            bounds.append(run.max_sim_time_s / (f.failures.mtbf_s + f.failures.mttr_s))
        if work_s is not None and (run.max_rounds is not None or run.max_tokens is not None):
            bounds.append(work_s / f.failures.mtbf_s)
            if k == n and times is not None:
                # Every node can fail and a failure loses the step under way: a step of tau seconds
                # completes only in an up-time longer than tau, after about e^(tau/mtbf) - 1
                # failures (each node; nobody is ahead to fetch a later step from). Failures far
                # faster than a step never finish.
                x = times[0] / f.failures.mtbf_s
                bounds[-1] = max(bounds[-1], s * (math.expm1(x) if x < 700 else math.inf))
        if bounds:
            terms["faults.failures.mtbf_s"] = k * min(bounds)
    if duration is not None:
        for i, l in enumerate(f.links):
            if l.mtbf_s is not None:  # each outage is two events (down, up), each re-times the flows on the link
                terms[f"faults.links.{i}.mtbf_s"] = 2 * duration / (l.mtbf_s + l.mttr_s)
        for i, st in enumerate(f.stragglers):
            if st.slow_periods is not None:
                sp = st.slow_periods
                terms[f"faults.stragglers.{i}.slow_periods"] = _selected(sc, st) * duration / (sp.mean_off_s +
                                                                                               sp.mean_on_s)
        if run.eval_every_s is not None and sc.numerics:
            terms["run.eval_every_s"] = duration / run.eval_every_s * _eval_work(sc)
    if sc.numerics and s is not None:
        # the evaluations at the start and at the end, and one every eval_every_steps steps of
        # worker 0; named after the largest of their factors (how many, how many batches, how big)
        periodic = s / run.eval_every_steps if run.eval_every_steps else 0.0
        factors = {"run.eval_every_steps": periodic, "run.eval_batches": float(run.eval_batches),
                   "run.eval_batch_size": run.eval_batch_size / sc.compute.batch_size}
        terms[max(factors, key=factors.get)] = (2 + periodic) * _eval_work(sc)
    return EventEstimate(s, duration, terms)


def _eval_work(sc) -> float:
    """One evaluation's work in inner-step batches (what one step event costs the numerics):
    eval_batches batches of eval_batch_size sequences, for one model or (eval_replicas) every
    replica; at least one."""
    run = sc.run
    return max(1.0, run.eval_batches * run.eval_batch_size / sc.compute.batch_size
               * (sc.topology.n_workers if run.eval_replicas else 1))


def check_events(est: EventEstimate, limit: int | None) -> None:
    if limit is None or est.total <= limit:
        return
    where, value = est.largest()
    if math.isinf(value):
        raise ValueError(f"{where}: the run would never finish (failures on every node far more often than a step "
                         "takes: a step almost never completes between two failures); make failures rarer or steps "
                         "shorter")
    raise ValueError(f"{where}: the run would simulate about {est.total:.3g} events ({value:.3g} from this field), "
                     f"more than run.max_events={limit:,}; change {where} or shorten the run, or raise "
                     "run.max_events (null: no limit)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def check_data_plugin(dataset, sc) -> int:
    """A data plug-in's object checked before work; returns its vocabulary as an int.

    ``vocab_size`` must be an integer >= 2; the first train batch (worker 0) and the first
    eval batch must be numpy arrays of shape ``[b, seq_len + 1]`` (the inputs and, shifted by
    one, the next-token targets: a ``[b, seq_len]`` batch would train on wrong targets and
    overstate the tokens), dtype int64 (what the embedding and the cross-entropy take) and ids
    in ``[0, vocab_size)``. The batches are drawn from a stream of their own
    (``data/check``), so the run's streams are untouched; small ones (at most 8 rows)."""
    import numpy as np

    from sim.rng import rng as named_rng

    v = getattr(dataset, "vocab_size", None)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
        raise ValueError(f"data.plugin: vocab_size must be an integer >= 2, the number of token ids the batches "
                         f"use (got {v!r}); set it in the object the plug-in returns")
    vocab, t = int(v), sc.model.seq_len
    g = named_rng(sc.seed, "data/check")
    calls = (("train_batch(g, 0, batch_size)", lambda b: dataset.train_batch(g, 0, b), sc.compute.batch_size),
             ("eval_batch(g, batch_size)", lambda b: dataset.eval_batch(g, b), sc.run.eval_batch_size))
    for what, call, size in calls:
        b = min(size, 8)
        try:
            batch = call(b)
        except Exception as err:  # the user's code: say where, in one line
            raise ValueError(f"data.plugin: {what} failed with batch_size={b}: {_first_line(err)}") from None
        name = what.split("(")[0]
        if not isinstance(batch, np.ndarray):
            raise ValueError(f"data.plugin: {name} must return a numpy array (got {type(batch).__name__}); "
                             "return np.asarray(ids, dtype=np.int64)")
        if batch.shape != (b, t + 1):
            hint = ("; one token short: each row is seq_len inputs plus the next-token target of the last one"
                    if batch.shape == (b, t) else "")
            raise ValueError(f"data.plugin: {name} must return [batch_size, seq_len + 1] = [{b}, {t + 1}] token ids "
                             f"(got {list(batch.shape)}){hint}")
        if batch.dtype != np.int64:
            raise ValueError(f"data.plugin: {name} must return int64 token ids (got {batch.dtype}); "
                             "return them with .astype(np.int64)")
        lo, hi = int(batch.min()), int(batch.max())
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(f"data.plugin: {name} returned token id {bad}, outside [0, vocab_size) = [0, {vocab}); "
                             "ids must be below the vocab_size the object states")
    return vocab


VMAP_FIX = ("make its forward vmappable (no .item() or Python branches on tensor values, no in-place updates of "
            "buffers or captured tensors such as BatchNorm's running statistics: LayerNorm or GroupNorm instead, no "
            "boolean-mask indexing)")


def check_model_engine(model, sc) -> None:
    """The model's forward and backward run once, as the replica engine the run will use runs
    them, on the meta device (shapes only: nothing allocated, nothing computed): two stacked
    replicas of a [1, seq_len] batch through ``torch.func.vmap(grad_and_value(loss))``
    (``replicas.replica_loss``) for the vmap engine. A model that cannot be batched that way
    (``.item()``, data-dependent branches, in-place buffer updates, dynamic shapes) is refused
    here with the reason and the fix, not at its first step. The stacked engine runs the
    built-in GPT only (checked by the schema), so there is nothing to try for it."""
    import torch
    from torch.func import grad_and_value, vmap

    from sim.training.replicas import replica_engine, replica_loss

    engine = replica_engine(sc.run.engine, sc.model.kind)
    if engine != "vmap":
        return
    output = getattr(sc.model, "output", "logits")
    params = {k: torch.empty((2, *p.shape), dtype=p.dtype, device="meta") for k, p in model.named_parameters()}
    x = torch.zeros((2, 1, sc.model.seq_len), dtype=torch.long, device="meta")
    try:
        vmap(grad_and_value(replica_loss(model, output)))(params, x, x)
    except Exception as err:  # the user's code under torch.func: the reason, and what to change
        reason = _first_line(err)
        if ". " in reason:  # torch's first sentence says what failed; the rest is advice for torch.func users
            reason = reason[:reason.index(". ")]
        if len(reason) > 300:
            reason = reason[:297] + "..."
        if sc.model.kind == "plugin":
            where = (f"model.plugin: {type(model).__name__} cannot train on the vmap engine (run.engine: "
                     f"{sc.run.engine}; torch.func.vmap over stacked replicas, the only engine for plug-in models)")
            fix = VMAP_FIX
        else:
            where = f"run.engine: the {sc.model.kind} model failed on the vmap engine"
            fix = "use run.engine: auto" + (" or stacked" if sc.model.kind == "gpt" else "")
        raise ValueError(f"{where}: forward and backward failed under vmap: {reason}; {fix}") from None


def check_method(sc, trained: list[tuple[str, int]] | None) -> None:
    """The method, built and configured as the run will (``trained``: the model's layout, None
    when numerics are off), has set its ``info``; a plug-in that has not is one line."""
    from sim.algorithms import make_algorithm
    from sim.algorithms.plugins import check_configured

    if trained is None:  # a timing-only run: the proxy's equal blocks (sim.build.proxy_layout, without simpy)
        layers = sc.timing.layers
        trained = [(f"blocks.{i}.params", max(1, int(sc.timing.params) // layers)) for i in range(layers)]
    method = make_algorithm(sc.algorithm, sc.topology.n_workers, sc.seed)
    where = "algorithm.plugin" if getattr(sc.algorithm, "plugin", None) else "algorithm.name"
    check_configured(method, trained, sc.timing.layers if sc.timing is not None else None, where)


def check_before_work(sc, here: bool = True) -> Prework:
    """Run every pre-work check on a validated scenario (see the module docstring); returns
    what they found. Timing-only scenarios never import torch. ``here=False`` (a sweep planned
    here and run on a Ray cluster) leaves out what depends on the machine that runs it:
    ``run.device``, the memory there is and ``run.kernels``."""
    if not sc.numerics:
        est = estimate_events(sc)
        check_events(est, sc.run.max_events)
        check_method(sc, None)
        return Prework(est)
    check_events(estimate_events(sc), sc.run.max_events)  # cheap first, before torch (flops mode: steps only)
    from sim.signals import interrupts_held

    with interrupts_held():  # (an interrupt inside torch's first import would abort the process)
        import torch

    from kernels.backend import resolve_backend
    from sim.algorithms import algorithm_class
    from sim.training.data import read_text_data
    from sim.training.memory import check_fits, estimate
    from sim.training.models import build_model
    from sim.training.replicas import resolve_device

    n = sc.topology.n_workers
    dataset = None
    if sc.data.kind == "text":
        vocab = len(read_text_data(sc.data, sc.model.seq_len, n)[1])
    elif sc.data.kind == "plugin":  # the user's object says (it may read its files now)
        from sim.training.data import make_dataset

        dataset = make_dataset(sc.data, sc.model.seq_len, n, sc.seed)
        vocab = check_data_plugin(dataset, sc)
    else:
        vocab = sc.data.vocab_size
    if sc.model.vocab_size is not None and sc.model.vocab_size != vocab:
        raise ValueError(f"model.vocab_size: must equal the data's vocabulary ({vocab}) or be omitted "
                         f"(got {sc.model.vocab_size})")
    device = None
    if here:
        try:
            device = resolve_device(sc.run.device)
        except RuntimeError as err:
            raise ValueError(str(err)) from None
    with torch.device("meta"):
        model = build_model(sc.model, vocab)  # shapes only: nothing allocated
    n_params = sum(p.numel() for p in model.parameters())
    check_method(sc, [(k, p.numel()) for k, p in model.named_parameters()])
    outer = algorithm_class(sc.algorithm).outer_state_copies
    memory = estimate(n_params, n, sc.model, vocab, sc.compute.batch_size, sc.run.eval_batch_size, outer,
                      sc.run.eval_replicas, model, eval_batches=sc.run.eval_batches)
    check_model_engine(model, sc)  # after the estimate's plain forward, whose messages are more specific
    if here or sc.run.memory_limit_gb is not None:  # a limit the scenario states holds anywhere
        check_fits(memory, device, sc.run.memory_limit_gb)
    if here:
        try:
            resolve_backend(sc.run.kernels, torch.empty(0, device=device))
        except RuntimeError as err:
            raise ValueError(f"run.kernels: {err}") from None
    est = estimate_events(sc, n_params)
    check_events(est, sc.run.max_events)
    return Prework(est, device, memory, vocab, n_params, dataset)
