"""HALoS: hierarchical asynchronous local SGD (Kim et al., ICML 2025, arXiv 2506.04531),
shipped as a plug-in (``sim.algorithms.METHODS``; REFERENCE.md section 10).

One local parameter server (LPS) per region that has workers, one global parameter server
(GPS, ``global_server``). Workers push their pseudo-gradient to their region's LPS (over the
intra-region link) and restart from the model it sends back at once; they never wait for
anyone else. The LPS applies each arrival with its own Delayed Nesterov (``local_lr``,
``local_momentum``, ``local_buffer_size``) and, once ``updates_per_push`` (K) updates have been
applied since its last merge, pushes its accumulated change (model at the last merge minus its
model now) to the GPS over the WAN, at most one push in flight. The GPS applies it with its own
Delayed Nesterov (``global_lr``, ``global_momentum``, ``global_buffer_size``) and sends its
model back to that LPS only, which merges theta_L = (1 - alpha) theta_L + alpha theta_G
(``merge_weight`` alpha: the weight of the global model) and starts counting again.

Local servers: the server declared in each region (``topology.servers``), else one created per
region that has workers, named ``<region>-lps`` (on the region's switch, the intra-region
link's bandwidth, no apply time). ``run.max_rounds``: worker updates that reached the GPS's
model (K per push) / workers.

Left open by the papers and decided here (as the authors' code does): worker updates applied
while a push is in flight stay in theta_L but are never sent as such (the snapshot is reset
at the merge); the GPS's staleness is counted per LPS (GPS versions since that LPS last got the
global model); the LPS's arrivals of the global model do not count as versions.
"""

from __future__ import annotations

from pydantic import Field

from sim.algorithms.asynchronous import AsyncKnobs, Asynchronous, DelayedNesterov, copy_tree, info_of, pick_server
from sim.algorithms.knobs import FieldError
from sim.schedule import Message, Served, ServerInfo

DELTA = "delta"
"""The stream of an LPS's accumulated change to the GPS (round: the LPS's push count)."""
GLOBAL = "global"
"""The stream of the GPS's model back to an LPS (answers that LPS's push of the same round)."""


class HALoSSpec(AsyncKnobs):
    """HALoS's knobs (the authors' code names in the descriptions)."""
    global_server: str | None = Field(default=None, description=(
        "The global parameter server (a topology.servers name); default: the topology's only server (with "
        "several, name it: the others are local servers, one per region at most)."))
    inner_steps: int = Field(default=8, ge=1, description="H: inner steps of the fastest worker per round (num_local_steps, 8).")
    dynamic_local_updates: bool = Field(default=True, description=(
        "DyLU (rescale_num_local_steps): H_w = max(1, ceil(H v_w / max v)), v = the worker's known speed."))
    local_lr: float = Field(default=3.2, gt=0, description="eta_l: the LPS's Delayed Nesterov lr (example: base 0.2 x N_l 16).")
    local_momentum: float = Field(default=0.9, ge=0, lt=1, description="beta_l: the LPS's momentum (0.9).")
    local_buffer_size: int = Field(default=16, ge=1, description="N_l: the LPS's Delayed Nesterov buffer (16).")
    global_lr: float = Field(default=0.3, gt=0, description="eta_g: the GPS's Delayed Nesterov lr (example: base 0.15 x N_g 2).")
    global_momentum: float = Field(default=0.5, ge=0, lt=1, description="beta_g: the GPS's momentum (0.5).")
    global_buffer_size: int = Field(default=2, ge=1, description="N_g: the GPS's Delayed Nesterov buffer (2).")
    updates_per_push: int = Field(default=32, ge=1, description=(
        "K (local_updates_accumulation): worker updates an LPS applies between two pushes to the GPS (32)."))
    merge_weight: float = Field(default=0.25, ge=0, le=1, description=(
        "alpha (model_merge_weight): theta_L = (1 - alpha) theta_L + alpha theta_G when the GPS's model arrives (0.25)."))


class HALoS(Asynchronous):
    Spec = HALoSSpec

    @classmethod
    def local_servers(cls, spec, topology) -> dict[str, ServerInfo]:
        """Region -> its LPS: the server declared there, else ``<region>-lps`` (regions with workers)."""
        by_region = topology.servers_by_region()
        names = {s.name: s.region for s in topology.servers}
        out = {}
        for r in topology.regions:
            declared = [s.name for s in by_region.get(r.name, []) if s.name != spec.global_server]
            if len(declared) > 1:
                raise FieldError(("global_server",), f"region '{r.name}' declares several servers ({', '.join(declared)}) "
                                                     "besides the global one; halos uses one local server per region")
            if declared:
                out[r.name] = info_of(topology, declared[0])
                continue
            name = f"{r.name}-lps"
            if name in names:
                raise FieldError(("global_server",), f"cannot create region '{r.name}''s local server '{name}': a server "
                                                     f"in region '{names[name]}' has that name; declare '{r.name}''s "
                                                     "local server under topology.servers")
            out[r.name] = ServerInfo(name, r.name)
        return out

    @classmethod
    def server_plan(cls, spec, topology):
        declared = {s.name for s in topology.servers}
        if spec.global_server is None:  # the topology's only server
            if not topology.servers:
                raise FieldError(("global_server",), "halos needs a global parameter server: declare one under "
                                                     "topology.servers (name, region)")
            if len(topology.servers) > 1:
                raise FieldError(("global_server",), "several servers could be the global one; name one of: "
                                                     + ", ".join(s.name for s in topology.servers))
            gps = topology.servers[0].name
        else:
            gps = pick_server("global_server", spec.global_server, topology)
        spec_gps = spec.model_copy(update={"global_server": gps})
        local = cls.local_servers(spec_gps, topology)
        for lps in local.values():
            if lps.name not in declared and lps.name in {r.name for r in topology.regions}:
                raise FieldError(("global_server",), f"cannot create the local server '{lps.name}': a region has that name")
        return [info_of(topology, gps)] + list(local.values())

    def setup(self) -> None:
        sp = self.spec
        names = list(self.servers)
        self.gps = names[0]
        self.lps_of_region = {s.region: s.name for s in list(self.servers.values())[1:]}
        self.local_dn = DelayedNesterov(sp.local_lr, sp.local_momentum, sp.local_buffer_size)
        self.global_dn = DelayedNesterov(sp.global_lr, sp.global_momentum, sp.global_buffer_size)
        self.merged_at = {name: 0 for name in names[1:]}  # LPS version at its last merge
        self.in_flight = {name: False for name in names[1:]}
        self.pushes = {name: 0 for name in names[1:]}
        self.carried: dict[tuple, int] = {}  # (lps, push round) -> worker updates the push carries

    def server_of(self, worker: int) -> str:
        return self.lps_of_region[self.worker_regions[worker]]

    def top_server(self) -> str:
        return self.gps

    def receive(self, server: str, message: Message) -> Served:
        if server == self.gps:  # an LPS's accumulated change
            stale = self.staleness(server, message.sender)
            self.version[server] += 1
            back = Message(GLOBAL, message.round, server, message.sender, self.elems, "fp32",
                           answers=(message.stream, message.round))
            return Served((back,), applied=True, staleness=stale, version=self.version[server],
                          counts=self.carried.pop((message.sender, message.round), 0))
        if message.stream == GLOBAL:  # the GPS's model: merge, start counting again
            self.merged_at[server] = self.version[server]
            self.in_flight[server] = False
            return Served((), version=self.version[server])
        stale = self.staleness(server, message.sender)
        self.version[server] += 1
        sends = [self.answer(server, message)]
        since = self.version[server] - self.merged_at[server]
        if since >= self.spec.updates_per_push and not self.in_flight[server]:
            self.in_flight[server] = True
            r = self.pushes[server]
            self.pushes[server] += 1
            sends.append(Message(DELTA, r, server, self.gps, self.elems, self.spec.payload_dtype))
        return Served(tuple(sends), applied=True, staleness=stale, version=self.version[server])

    def departed(self, server: str, messages, time_s: float) -> None:
        for m in messages:
            if m.stream == DELTA:  # it carries every update applied since the last merge, up to now
                self.carried[(server, m.round)] = self.version[server] - self.merged_at[server]
            else:  # (an LPS's push does not refresh what it knows of the GPS)
                self.sent_version[server][m.to] = self.version[server]

    # ---------------------------------------------------------------- math
    def init_server(self, state, server: str) -> None:
        dn = self.global_dn if server == self.gps else self.local_dn
        state.opt[server] = dn.init(state.models[server])
        if server != self.gps:
            state.extra[server] = copy_tree(state.models[server])  # snapshot at last merge

    def update(self, state, server: str, message: Message, served: Served, payload) -> None:
        if server == self.gps:
            self.global_dn.step_(state.models[server], state.opt[server], payload, self.kernels)
        elif message.stream == GLOBAL:  # theta_L = (1 - alpha) theta_L + alpha theta_G; snapshot := theta_L
            import torch

            a = self.spec.merge_weight
            model = state.models[server]
            for k, v in model.items():
                v.copy_(torch.lerp(v, payload[k], a))
            state.extra[server] = copy_tree(model)
        else:
            self.local_dn.step_(state.models[server], state.opt[server], payload, self.kernels)

    def payload(self, state, server: str, message: Message):
        if message.stream == DELTA:  # snapshot at the last merge - theta_L now, in the push's wire format
            from sim.algorithms.transforms import tree_sub, wire_roundtrip

            return wire_roundtrip(tree_sub(state.extra[server], state.models[server]), message.wire_format,
                                  backend=self.kernels)
        return super().payload(state, server, message)
