"""The notebooks run top to bottom on a small budget (so they never rot)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch, tmp_path):
    """Every notebook in notebooks/ executes without errors (LOCOSIM_NOTEBOOK_BUDGET=small)."""
    nbformat = pytest.importorskip("nbformat", reason="pip install 'locosim[notebooks]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install 'locosim[notebooks]'")
    monkeypatch.setenv("LOCOSIM_NOTEBOOK_BUDGET", "small")
    monkeypatch.setenv("LOCOSIM_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
