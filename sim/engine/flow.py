"""One flow of the network model: ``Flow``, a transfer's route, size and progress (or a flow
class standing for many members, see ``Network.transfer_group``).

Its own module because every part of the network model holds flows: the network
(``sim.engine.network``), its flow table (``flow_table``), its flow classes
(``flow_classes``), its rate log (``rate_log``) and its arrivals (``arrivals``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import simpy

_INF = math.inf


@dataclass(eq=False)
class Flow:
    src: str
    dst: str
    size: float
    links: list[tuple[str, str]]
    latency_s: float
    tag: str
    start_s: float
    done: simpy.Event
    rate: float = 0.0  # bytes/s now (in_arrays: as of leaving the arrays; the column holds it)
    seq: int = 0
    route: list[str] = field(default_factory=list)
    ready: simpy.Event | None = None
    link_ids: tuple[int, ...] = ()  # ``links`` as the network's link ids
    remaining: float = 0.0  # bytes still to send as of updated_s (unless in_arrays)
    updated_s: float = 0.0
    version: int = 0  # bumped whenever its finish time moves; older heap entries are stale
    slot: int = -1  # its column in the network's flow arrays, once it has one, else -1
    in_arrays: bool = False  # its progress and finish time are in the arrays, not here
    rkeys: tuple[int, ...] = ()  # the rate log's keys it counts toward (its WAN links, its region pair)
    rkm: tuple = ()  # a class: (key, members counted there) pairs
    q: int = 0  # its rate as the log counts it (2^-16 bytes/s; 0 when stalled or due now)
    # A flow class (Network.transfer_group): ``members`` [(src, dst, path, link ids, seq)],
    # ``degree`` {link id: members crossing it}, ``hops[k]`` the members' k-th link ids, and
    # ``pairs`` {(src region, dst region): members}; ``link_ids`` its distinct links. Every
    # member has this object's rate, progress and finish time. None: one flow.
    members: list | None = None
    degree: dict | None = None
    hops: list | None = None
    pairs: dict | None = None
    owner: "Flow | None" = None  # a member split off a class: the class whose done event it counts toward
    finish_s: float = _INF  # its finish time as last pushed (a class's members inherit it when split)
    arrived: int = 0  # a class: members delivered so far
    touched: bool = False  # a class: a plain flow has used one of its links (then checked link by link)
    fp_ids: np.ndarray | None = None  # a class: its distinct link ids and what it adds to their fingerprints
    fp_add: np.ndarray | None = None
    hop_arr: list | None = None  # a class: ``hops`` as arrays, and each hop's lowest link id
    hop_min: list | None = None
    sym_epoch: int = -1  # the network epoch of its last symmetry answer, and the answer
    sym: bool = False
    cancelled: bool = False  # called off (Network.cancel): never delivered
    net: "Network | None" = None  # the network whose arrays hold its column (set with its slot)


def _flow_rate(f: Flow) -> float:
    return float(f.net._rate[f.slot]) if f.in_arrays else f._r


def _set_flow_rate(f: Flow, rate: float) -> None:
    f._r = rate


# ``rate`` of a flow in the arrays is its column's (``_solve_large`` writes the column, not
# thousands of objects); other flows keep it in ``_r``.
Flow.rate = property(_flow_rate, _set_flow_rate)
