"""Small composable transforms over stacked replica tensors (optax-like init/update).

Named methods are compositions of these: DiLoCo = pseudo_gradients -> wire_roundtrip ->
replica_mean -> OuterNesterov -> broadcast. Later methods (streaming, eager, gossip)
reuse them and differ only where they really differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.quantize import roundtrip

Tree = dict[str, torch.Tensor]


def pseudo_gradients(outer: Tree, stacked: Tree) -> Tree:
    """Delta_m = theta_outer - theta_m for every replica m (DiLoCo sign: points uphill)."""
    return {k: outer[k].unsqueeze(0) - stacked[k] for k in stacked}


def wire_roundtrip(tree: Tree, fmt: str) -> Tree:
    """Each replica's contribution as the receivers see it after the wire format."""
    return {k: roundtrip(v, fmt) for k, v in tree.items()}


def replica_mean(tree: Tree) -> Tree:
    """Average over the replica dimension (dim 0), accumulated in fp32."""
    return {k: v.float().mean(dim=0) for k, v in tree.items()}


def broadcast(tree: Tree, stacked: Tree) -> None:
    """Copy one set of parameters into every replica, in place."""
    for k in stacked:
        stacked[k].copy_(tree[k].unsqueeze(0).expand_as(stacked[k]))


@dataclass(frozen=True)
class OuterNesterov:
    """Outer SGD with Nesterov momentum, PyTorch form (DiLoCo, OpenDiLoCo, torchft):
    v <- mu v + delta;  theta <- theta - lr (delta + mu v).  ``nesterov=False``: theta -= lr v."""

    lr: float
    momentum: float
    nesterov: bool = True

    def init(self, params: Tree) -> Tree:
        return {k: torch.zeros_like(v) for k, v in params.items()}

    def update(self, delta: Tree, state: Tree, params: Tree) -> tuple[Tree, Tree]:
        new_state, new_params = {}, {}
        for k, p in params.items():
            v = self.momentum * state[k] + delta[k]
            step = delta[k] + self.momentum * v if self.nesterov else v
            new_state[k] = v
            new_params[k] = p - self.lr * step
        return new_params, new_state
