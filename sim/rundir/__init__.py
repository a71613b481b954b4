"""The run directory's one owner: what it holds and who may write it.

* ``sim.rundir.contract``: file names, statuses, the typed ``Manifest`` (which carries the typed
  ``Summary`` written next to it; that type lives with ``summarize`` in ``sim.metrics.summary``),
  strict-JSON and atomic writing, ``settle`` (the ending of a run whose process could not write
  it) and ``read_manifest`` / ``read_summary`` / ``status_of``;
* ``sim.rundir.claims``: claiming a directory atomically before any work, and the sweep lock.

This package's public face: import these names from ``sim.rundir``.
"""

from sim.rundir.claims import (Claim, RunDirTaken, SweepLock, SweepLocked, claim_dir, claim_unique, claim_variants,
                               is_run_dir, is_sweep_dir)
from sim.rundir.contract import (DASHBOARD, EVENTS, FINISHED, INDEX, LOCK, MANIFEST, MANIFEST_REQUIRED, METRICS, MODEL,
                                 RUN_FILES, STATUS_COMPLETED, STATUS_DIVERGED, STATUS_FAILED, STATUS_INTERRUPTED,
                                 STATUS_RUNNING, STATUS_STARTING, SUMMARY, SUMMARY_REQUIRED, SWEEP_FILES, SWEEP_JSON,
                                 Manifest, RunDirError, inf_as_text, read_manifest, read_summary, restore_scenario, settle,
                                 status_of, write_json, write_json_in_place, write_manifest)

__all__ = ["Claim", "RunDirTaken", "SweepLock", "SweepLocked", "claim_dir", "claim_unique", "claim_variants",
           "is_run_dir",
           "is_sweep_dir", "DASHBOARD", "EVENTS", "FINISHED", "INDEX", "LOCK", "MANIFEST", "MANIFEST_REQUIRED",
           "METRICS", "MODEL", "RUN_FILES", "STATUS_COMPLETED", "STATUS_DIVERGED", "STATUS_FAILED",
           "STATUS_INTERRUPTED", "STATUS_RUNNING", "STATUS_STARTING", "SUMMARY", "SUMMARY_REQUIRED", "SWEEP_FILES",
           "SWEEP_JSON", "Manifest", "RunDirError", "inf_as_text", "read_manifest", "read_summary", "restore_scenario",
           "settle", "status_of", "write_json", "write_json_in_place", "write_manifest"]
