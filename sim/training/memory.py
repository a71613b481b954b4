"""How much memory a run's numerics need, checked before anything is allocated.

Per replica, in fp32 (4 bytes an element), with P the model's parameters:

* persistent state: parameters, AdamW's two moments, and the method's per-worker outer
  state (outer parameters and outer momentum for the DiLoCo family and NoLoCo, none for
  ddp) -- ``(3 + outer_copies) x P``;
* transients of one inner step: the gradient and the optimizer's new moments and new
  parameters before they are copied back -- ``4 x P``;
* activations kept for the backward pass of one step, per token (``activation_floats``);
  tests check this against the bytes autograd really saves (``saved_tensor_bytes``). A
  plug-in model's are traced (``measured_activation_floats``), and so is the peak of live
  tensors of its forward at two batch sizes (``plugin_forward_bytes``), which also sees what
  the forward allocates for itself.

Plus, once for the run, evaluation (``eval_floats``): the held-out batches (int64 token
ids, kept for the run) and the forward of one evaluation batch, which without autograd
holds one block's tensors at a time besides the logits (for every replica at once with
``run.eval_replicas``); tests check it against the peak of live tensors of that forward
on the meta device. The estimate leaves out allocator slack and the CUDA context;
it is there to refuse, before starting, a scenario that cannot fit, not to size a device
to the byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FLOAT_BYTES = 4
STATE_COPIES = 3       # parameters, exp_avg, exp_avg_sq
STEP_TRANSIENT_COPIES = 4  # gradient, new exp_avg, new exp_avg_sq, new parameters


def measured_activation_floats(model, seq_len: int, vocab: int, output: str = "logits") -> int:
    """Floats autograd saves per token for a model built on the meta device (a plug-in model,
    whose layers we do not know): one forward and cross-entropy (``output: loss``: the model's
    own loss) traced with saved-tensor hooks, nothing allocated. Counts the weights a layer
    saves too (an over-estimate). Raises ValueError naming ``model.output`` when the forward
    does not give what it says."""
    import torch
    import torch.nn.functional as F

    saved = [0]

    def pack(t):
        saved[0] += t.numel()
        return t

    idx = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    # (tensors the forward makes without naming a device: on the meta device too, never allocated)
    with torch.device("meta"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call = "forward(tokens, targets)" if output == "loss" else "forward(tokens)"
        try:
            out = model(idx, idx) if output == "loss" else model(idx)
        except Exception as err:  # the user's code: say where, in one line
            first = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(f"model.plugin: {type(model).__name__}.{call} (model.output: {output}) failed on a "
                             f"[1, {seq_len}] batch: {type(err).__name__}: {first}") from None
        tensor = isinstance(out, torch.Tensor)
        got = tuple(out.shape) if tensor else type(out).__name__
        if output == "loss":
            if not tensor or out.numel() != 1:
                raise ValueError(f"model.output: loss: forward(tokens, targets) must return one number (got {got})")
        else:
            # a vocabulary padded past the data's is fine
            if not (tensor and out.dim() >= 2 and out.shape[-1] >= vocab and out.numel() == seq_len * out.shape[-1]):
                raise ValueError(f"model.output: logits: forward(tokens) must return [batch, seq_len, at least "
                                 f"{vocab}] (got {got}); a model that returns its own loss takes output: loss")
            F.cross_entropy(out.reshape(seq_len, -1), torch.zeros(seq_len, dtype=torch.long, device="meta"))
    return -(-saved[0] // seq_len)


def peak_live_bytes(fn) -> int:
    """Peak bytes of live tensor storages while ``fn()`` runs (on the meta device: shapes only,
    nothing allocated): every storage an op's output holds counts from its first tensor's
    creation until Python drops its last (a view shares its base's storage)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    state = {"live": 0, "peak": 0}
    refs: dict[int, int] = {}

    def free(key: int, n: int) -> None:
        refs[key] -= 1
        if not refs[key]:
            del refs[key]
            state["live"] -= n

    class Peak(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key, n = storage._cdata, storage.nbytes()
                    refs[key] = refs.get(key, 0) + 1
                    weakref.finalize(t, free, key, n)
                    if refs[key] == 1:
                        state["live"] += n
                        state["peak"] = max(state["peak"], state["live"])
            return out

    with Peak():
        fn()
    return state["peak"]


def plugin_forward_bytes(model, seq_len: int, output: str = "logits") -> tuple[int, int]:
    """(c, k): one training forward and loss of a plug-in model (built on the meta device), traced
    on the meta device at batch 1 and 2, peaks at about c + b·k bytes of live tensors at batch b
    -- what it allocates itself (a scratch buffer, a cache: c) as well as its activations (k).
    Tensors the forward makes without naming a device are made on the meta device too, so the
    trace never allocates what it measures."""
    import torch
    import torch.nn.functional as F

    def peak(b: int) -> int:
        idx = torch.zeros(b, seq_len, dtype=torch.long, device="meta")

        def forward():
            out = model(idx, idx) if output == "loss" else model(idx)
            if output != "loss":
                F.cross_entropy(out.reshape(b * seq_len, -1), idx.reshape(-1))

        with torch.device("meta"):
            return peak_live_bytes(forward)

    p1, p2 = peak(1), peak(2)
    k = max(p2 - p1, 0)
    return max(p1 - k, 0), k


def activation_floats(spec, vocab: int) -> int:
    """Floats autograd keeps per token for one forward/backward of one replica.

    gpt, per block: the two LayerNorms' inputs and outputs (4d), qkv's input and q, k, v
    (4d), the attention probabilities before and after softmax (2 x heads x T), the
    attention output and projection input (2d), the MLP's input (d), hidden before and
    after GELU (2 x mlp_ratio x d); after the blocks: the final LayerNorm (2d) and the
    logits and their log-softmax (2V). mlp: the context embeddings, hidden before and
    after GELU, logits and log-softmax."""
    if spec.kind == "gpt":
        d, t, h, r = spec.d_model, spec.seq_len, spec.n_heads, spec.mlp_ratio
        per_block = 4 * d + 4 * d + 2 * h * t + 2 * d + d + 2 * r * d
        return spec.n_layers * per_block + 2 * d + 2 * vocab
    return spec.context * spec.d_model + 2 * spec.hidden + 2 * vocab


def eval_floats(spec, vocab: int) -> int:
    """Floats per token live at the peak of an evaluation forward (no autograd frees each
    tensor when the code lets go of it), an upper bound: gpt, the larger of one block's moment
    -- every tensor a block makes (``activation_floats``' count, plus the third attention
    temporary: scores, masked, softmax) and its input -- and the head's: the final LayerNorm's
    input and output and the logits and their log-softmax. Other models: everything a
    training forward keeps."""
    if spec.kind == "gpt":
        d, t, h, r = spec.d_model, spec.seq_len, spec.n_heads, spec.mlp_ratio
        block = 4 * d + 4 * d + 2 * h * t + 2 * d + d + 2 * r * d
        return max(block + h * t + d, 2 * d + 2 * vocab)
    return activation_floats(spec, vocab)


@dataclass(frozen=True)
class MemoryEstimate:
    n_params: int
    replicas: int
    state_bytes_per_replica: int
    activation_bytes_per_replica: int
    eval_bytes: int

    @property
    def bytes_per_replica(self) -> int:
        return self.state_bytes_per_replica + self.activation_bytes_per_replica

    @property
    def total_bytes(self) -> int:
        return self.replicas * self.bytes_per_replica + self.eval_bytes

    def as_dict(self) -> dict:
        return {"bytes_per_replica": self.bytes_per_replica, "total_bytes": self.total_bytes,
                "state_bytes_per_replica": self.state_bytes_per_replica,
                "activation_bytes_per_replica": self.activation_bytes_per_replica, "eval_bytes": self.eval_bytes}


def estimate(n_params: int, replicas: int, spec, vocab: int, batch_size: int, eval_batch_size: int,
             outer_copies: int, eval_replicas: bool, model=None, eval_batches: int = 0) -> MemoryEstimate:
    """``model``: the model on the meta device, needed for a plug-in model's activations;
    ``eval_batches``: held-out batches kept for the run."""
    state = (STATE_COPIES + outer_copies + STEP_TRANSIENT_COPIES) * n_params * FLOAT_BYTES
    per_token = (measured_activation_floats(model, spec.seq_len, vocab, spec.output) if spec.kind == "plugin"
                 else activation_floats(spec, vocab))
    act = batch_size * spec.seq_len * per_token * FLOAT_BYTES
    evaluated = replicas if eval_replicas else 1
    eval_per_token = per_token if spec.kind == "plugin" else eval_floats(spec, vocab)
    one_eval = eval_batch_size * spec.seq_len * eval_per_token * FLOAT_BYTES
    if spec.kind == "plugin":  # and what its forward allocates, traced (plugin_forward_bytes)
        c, k = plugin_forward_bytes(model, spec.seq_len, spec.output)
        act = max(act, c + batch_size * k)
        one_eval = max(one_eval, c + eval_batch_size * k)
    eval_bytes = evaluated * one_eval + eval_batches * eval_batch_size * (spec.seq_len + 1) * 8  # + held-out ids
    return MemoryEstimate(n_params, replicas, state, act, eval_bytes)


def available_bytes(device) -> tuple[int | None, str]:
    """Bytes the numerics may use on ``device`` now, and where the number comes from."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free host memory"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def check_fits(est: MemoryEstimate, device, limit_gb: float | None) -> None:
    """Raise ValueError (one line, naming what to change) when ``est`` exceeds the memory there is."""
    if limit_gb is not None:
        have, where = int(limit_gb * 1e9), "run.memory_limit_gb"
    else:
        have, where = available_bytes(device)
        if have is None:
            return
    if est.total_bytes > have >= est.replicas * est.bytes_per_replica:  # training alone fits: evaluation does not
        raise ValueError(
            f"run.eval_batch_size: the numerics need about {est.total_bytes / 1e9:.3g} GB, "
            f"{est.eval_bytes / 1e9:.3g} GB of it for evaluation (the held-out batches, and one batch of "
            f"eval_batch_size sequences through the model at once) but {where} is {have / 1e9:.3g} GB; lower "
            "run.eval_batch_size (raise run.eval_batches to evaluate as many sequences)")
    if est.total_bytes > have:
        raise ValueError(
            f"run: the numerics need about {est.total_bytes / 1e9:.3g} GB ({est.replicas} replicas x "
            f"{est.bytes_per_replica / 1e6:.4g} MB: {est.state_bytes_per_replica / 1e6:.4g} MB parameters and "
            f"optimizer state, {est.activation_bytes_per_replica / 1e6:.4g} MB activations) but {where} is "
            f"{have / 1e9:.3g} GB; use fewer workers, a smaller model.* or compute.batch_size, or set "
            "numerics: false for a timing-only run")


def saved_tensor_bytes(fn, exclude=()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs,
    leaving out those of the tensors in ``exclude`` (the parameters): an independent
    measurement of activation memory, used by the tests."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if t.is_floating_point() and storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
