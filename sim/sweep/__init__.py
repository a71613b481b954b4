"""Sweeps: many runs of one scenario file, on a local process pool or a Ray cluster.

* ``sim.sweep.plan``: the file's variants x grid points x seeds -> runs, each with a stable
  directory name, validated and checked before anything is written;
* ``sim.sweep.run``: running the plan (resume, the lock, this process / pool / Ray);
* ``sim.sweep.pool``: a generic process pool (idle workers only, clean stop, die with parent);
* ``sim.sweep.index``: ``index.parquet`` and ``sweep.json``.

Import names from the module that holds them.
"""
