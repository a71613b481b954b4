"""What every section of the scenario schema shares: the strict, frozen base model and the
names of the discriminators (a section's ``name``, ``kind`` or ``mode``).

Separate so that the sections, the error formatter and the variant merge can all use them
without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A scenario section: unknown keys are errors (``extra="forbid"``) and it cannot change once built."""
    model_config = ConfigDict(extra="forbid", frozen=True)


DISCRIMINATORS = ("name", "kind", "mode")
"""The keys that pick a section's kind (``algorithm.name``, ``model.kind``, ``compute.step_time.mode``):
error locations drop them, and a variant that changes one replaces the section instead of merging."""
