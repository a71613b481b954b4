import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Small, fast settings for runs made in tests (a 1-layer GPT, few steps).
TINY = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.seq_len=16", "compute.batch_size=4",
        "run.eval_batches=1", "run.eval_batch_size=8"]


@pytest.fixture
def root() -> Path:
    return ROOT
