"""The run loop (``sim.loop.RunLoop.run``) processes events in batches; it must stop exactly where
a loop that steps one event at a time and looks at the stop event after each would stop."""

from __future__ import annotations

import pytest

from sim.runner import Simulation
from sim.scenario import load_scenario
from tests.conftest import ROOT, TINY


def _scenario(**stop):
    """The quickstart, timing-only (a timing proxy sizes the payloads), stopped by ``stop`` (rounds
    otherwise out of reach)."""
    sets = [f"run.{k}={v}" for k, v in stop.items()] + ([] if "max_rounds" in stop else ["run.max_rounds=1000"])
    return load_scenario(ROOT / "scenarios/quickstart.yaml",
                         TINY + ["numerics=false", "timing={params: 1.0e6, layers: 2}"] + sets)


def _one_at_a_time(sim: Simulation) -> None:
    """The reference: step while the stop event has not been processed."""
    sim.evaluate(0)
    if sim.sc.run.max_sim_time_s is not None:
        sim.env.timeout(sim.sc.run.max_sim_time_s).callbacks.append(sim.loop._time_up)
    while not sim.stop.processed:
        sim.env.step()
    sim.finish()


@pytest.mark.parametrize("stop", [{"max_rounds": 3}, {"max_sim_time_s": 2.3}, {"max_tokens": 5000}])
def test_batched_stepping_stops_where_stepping_one_event_at_a_time_stops(stop):
    """Same scenario, the batched loop and the one-event reference: the same clock, the same events
    left in the queue, the same records."""
    a, b = Simulation(_scenario(**stop)), Simulation(_scenario(**stop))
    a.run()
    _one_at_a_time(b)
    assert a.env.now == b.env.now
    assert len(a.env._queue) == len(b.env._queue)
    assert a.stop.processed and b.stop.processed
    assert a.rounds == b.rounds and a.tokens == b.tokens
    assert a.recorder.states == b.recorder.states
    assert a.recorder.transfers == b.recorder.transfers


def test_a_run_that_has_stopped_stays_stopped():
    """A second ``run`` processes no event: the clock, the queue and the records stay as they were."""
    sim = Simulation(_scenario(max_rounds=2))
    sim.run()
    now, queued, spans = sim.env.now, len(sim.env._queue), len(sim.recorder.states)
    sim.run()
    assert (sim.env.now, len(sim.recorder.states)) == (now, spans)
    assert len(sim.env._queue) >= queued  # (only the new run's timers are added, none processed)
