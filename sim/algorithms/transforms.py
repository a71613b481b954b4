"""Small composable transforms over stacked replica tensors (optax-like init/update).

Named methods are compositions of these: DiLoCo = wire_roundtrip of (outer - local) ->
Reduction mean -> OuterNesterov; streaming adds merge; eager swaps the worker's own share;
NoLoCo adds a pull toward the group mean. They differ only where they really differ.

torch is imported inside the functions that need it, so the algorithms' schedules (and a
timing-only run, which never calls these) import without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Tree = dict[str, "torch.Tensor"]


def wire_roundtrip(tree: Tree, fmt: str, stacked: bool = False, backend: str = "auto") -> Tree:
    """A contribution as the receivers see it after the wire format. ``tree`` is one payload
    (``stacked``: dim 0 is the replica and each replica's slice is its own payload).

    Block and top-k formats see a payload as one flat vector in tree order -- what
    ``kernels.formats.payload_bytes`` counts -- so it is concatenated, sent and split back;
    plain casts go tensor by tensor (the same values either way). ``backend``: the kernels'
    (``kernels.backend``; every backend gives the reference's values)."""
    from kernels.formats import parse_format
    from kernels.quantize import roundtrip

    if parse_format(fmt).elementwise:
        return {k: roundtrip(v, fmt, backend) for k, v in tree.items()}
    import torch

    keys = list(tree)
    lead = (tree[keys[0]].shape[0],) if stacked else ()
    flat = torch.cat([tree[k].reshape(*lead, -1).float() for k in keys], dim=-1)
    out = roundtrip(flat, fmt, backend)
    sizes = [tree[k][0].numel() if stacked else tree[k].numel() for k in keys]
    return {k: part.reshape(tree[k].shape) for k, part in zip(keys, out.split(sizes, dim=-1))}


class ErrorFeedback:
    """Error feedback for lossy wire formats (Seide et al. 2014; Karimireddy et al. 2019):
    each worker adds the residual it kept from earlier payloads to what it sends, and keeps
    the new residual, e <- (delta + e) - Q(delta + e). What a worker has sent over rounds
    then sums to the sum of its true deltas minus its current residual (one payload's
    quantization error), instead of accumulating every round's error. Residuals are per
    worker and per tensor name (a streaming fragment carries only its own)."""

    def __init__(self, fmt: str, backend: str = "auto"):
        self.fmt = fmt
        self.backend = backend
        self.residual: dict[int, Tree] = {}

    def send(self, worker: int, tree: Tree) -> Tree:
        """``tree`` plus this worker's residual, as the receivers see it after the wire."""
        res = self.residual.setdefault(worker, {})
        want = {k: v + res[k] if k in res else v for k, v in tree.items()}
        sent = wire_roundtrip(want, self.fmt, backend=self.backend)
        res.update({k: want[k] - sent[k] for k in want})
        return sent


def replica_mean(tree: Tree) -> Tree:
    """Average over the replica dimension (dim 0), accumulated in fp32."""
    return {k: v.float().mean(dim=0) for k, v in tree.items()}


@dataclass(frozen=True)
class OuterNesterov:
    """Outer SGD with Nesterov momentum, PyTorch form (DiLoCo, OpenDiLoCo, torchft):
    v <- mu v + delta;  theta <- theta - lr (delta + mu v).  ``nesterov=False``: theta -= lr v."""

    lr: float
    momentum: float
    nesterov: bool = True

    def init(self, params: Tree) -> Tree:
        import torch

        return {k: torch.zeros_like(v) for k, v in params.items()}

    def update(self, delta: Tree, state: Tree, params: Tree) -> tuple[Tree, Tree]:
        new_state, new_params = {}, {}
        for k, p in params.items():
            v = self.momentum * state[k] + delta[k]
            step = delta[k] + self.momentum * v if self.nesterov else v
            new_state[k] = v
            new_params[k] = p - self.lr * step
        return new_params, new_state

    def step_(self, params: Tree, state: Tree, delta: Tree, backend: str = "auto") -> None:
        """``update`` in place (``params`` and ``state`` are overwritten; the same values), one
        fused kernel per tensor (``kernels.outer.outer_nesterov_``)."""
        from kernels.outer import outer_nesterov_

        for k, p in params.items():
            outer_nesterov_(p, state[k], delta[k], self.lr, self.momentum, self.nesterov, backend)


def tree_sub(a: Tree, b: Tree) -> Tree:
    return {k: a[k] - b[k] for k in a}


def worker_view(stacked: Tree, worker: int, keys=None) -> Tree:
    """One worker's slice of stacked tensors (views: writing to them writes the stack)."""
    return {k: stacked[k][worker] for k in (keys if keys is not None else stacked)}


def assign(dst: Tree, src: Tree) -> None:
    """Copy ``src`` into the tensors of ``dst`` in place (e.g. a worker's views)."""
    for k, v in src.items():
        dst[k].copy_(v)


def merge(local: Tree, outer: Tree, alpha: float) -> Tree:
    """Streaming DiLoCo's mixing: alpha * local + (1 - alpha) * outer (alpha 0 = outer exactly)."""
    import torch

    return {k: torch.lerp(outer[k], local[k], alpha) for k in outer}


def spread(stacked: Tree) -> float:
    """Root-mean-square over elements of the std across workers (dim 0) of stacked params."""
    total, count = 0.0, 0
    for v in stacked.values():
        total += float(v.float().var(dim=0, unbiased=False).sum())
        count += v[0].numel()
    return (total / max(count, 1)) ** 0.5


def max_pairwise_distance(stacked: Tree) -> float:
    """Largest L2 distance between any two workers' parameter vectors."""
    import torch

    flat = torch.cat([v.float().reshape(v.shape[0], -1) for v in stacked.values()], dim=1)
    return float(torch.cdist(flat, flat).max()) if flat.shape[0] > 1 else 0.0


class Reduction:
    """One collective's inputs and result: each group member's contribution (as received
    after the wire format) and, once the engine says the collective completed and every
    participant's contribution has been computed, their fp32 mean.

    Faults (issue 4): the engine may run a collective over a subset of the group
    (``participants``: members that were down or late are left out); the mean is then
    over those present only -- re-weighted, not zero-filled -- and a late member's
    contribution, if it computed one, is ignored. The result is freed once every member
    that uses it released it; ``excused`` members (down, or past it when they came back)
    are not waited for."""

    def __init__(self, group: tuple[int, ...]):
        self.group = group
        self.contribs: dict[int, Tree] = {}
        self.done = False
        self.participants: tuple[int, ...] | None = None
        self.users: set[int] = set()
        self.excused: set[int] = set()
        self.gone = False
        """A stand-in for a result freed before this worker, which was left out of it, looked
        for it (``OuterMethod.reduction``): ready at once, with nothing to apply."""
        self._mean: Tree | None = None
        self._released: set[int] = set()

    @property
    def present(self) -> tuple[int, ...]:
        """Members whose contributions the result averages (the group unless the engine said otherwise)."""
        return self.group if self.participants is None else self.participants

    def add(self, worker: int, tree: Tree) -> None:
        if worker in self.contribs:
            raise RuntimeError(f"worker {worker} contributed twice")
        self.contribs[worker] = tree

    def finish(self, participants: tuple[int, ...] | None = None) -> None:
        """The engine completed the collective over ``participants`` (None: the whole group).
        None present (a payload in parts whose parts ran with different members, each dropped
        from some part): there is no whole result, as for a member left out of it -- the
        reduction is ``gone``, ready with nothing to apply, and every member keeps its own."""
        if participants is not None and not participants:
            self.gone = True
        self.participants = participants
        self.done = True

    def ready(self) -> bool:
        return self.gone or (self.done and all(w in self.contribs for w in self.present))

    def mean(self) -> Tree:
        if not self.ready():
            raise RuntimeError("reduction read before its collective completed (ordering bug)")
        if self._mean is None:
            import torch

            present = self.present
            first = self.contribs[present[0]]
            self._mean = {k: torch.stack([self.contribs[w][k] for w in present]).float().mean(dim=0) for k in first}
        return self._mean

    def release(self, worker: int) -> bool:
        """Mark ``worker`` done with this result; True when every member that is not excused is (free it)."""
        self._released.add(worker)
        return self.freeable()

    def freeable(self) -> bool:
        return bool(self._released) and set(self.group) - self.excused <= self._released
