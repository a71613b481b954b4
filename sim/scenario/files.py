"""Files a scenario names, read and checked outside the schema's models: a link's bandwidth
time series (``topology.links[].bandwidth_csv``) and measured step times
(``faults.stragglers[].factor.csv``).

Parsing lives here, not in the pydantic models, so a model stays a plain description of the
scenario and each file format is one function with its own one-line errors (``ValueError``:
the file's name, the line, what is wrong). The models call these functions; the loader
(``sim.scenario.load``) calls them once to refuse a bad file before a run starts.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path


def read_text(p: Path) -> str:
    """A UTF-8 file referenced by a scenario; ValueError (one line) when it is missing or unreadable."""
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file {str(p)!r}") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise ValueError(f"cannot read {str(p)!r} as a UTF-8 text file ({type(err).__name__})") from None


def read_bandwidth_csv(p: Path) -> list[tuple[float, float]]:
    """(time_s, bandwidth_gbps) rows of a bandwidth CSV (header 'time_s,bandwidth_gbps').
    ValueError, one line, if bad: missing file, wrong header, a row that is not two numbers,
    times not finite, >= 0 and strictly increasing, or a bandwidth not finite and >= 0."""
    text = read_text(p)
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in r)]
    if not rows or [c.strip() for c in rows[0][1]] != ["time_s", "bandwidth_gbps"]:
        got = ",".join(rows[0][1]) if rows else "an empty file"
        raise ValueError(f"{p.name}: the header must be 'time_s,bandwidth_gbps' (got {got!r})")
    if len(rows) < 2:
        raise ValueError(f"{p.name}: needs at least one data row after the header")
    out: list[tuple[float, float]] = []
    for line, row in rows[1:]:
        try:
            t, bw = (float(c) for c in row)
        except ValueError:
            raise ValueError(f"{p.name} line {line}: expected two numbers time_s,bandwidth_gbps "
                             f"(got {','.join(row)!r})") from None
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"{p.name} line {line}: time_s must be finite and >= 0 (got {row[0].strip()})")
        if out and t <= out[-1][0]:
            raise ValueError(f"{p.name} line {line}: time_s must increase from row to row "
                             f"(got {row[0].strip()} after {out[-1][0]:g})")
        if not (math.isfinite(bw) and bw >= 0):
            raise ValueError(f"{p.name} line {line}: bandwidth_gbps must be finite and >= 0 (got {row[1].strip()})")
        out.append((t, bw))
    if out[-1][1] == 0:
        raise ValueError(f"{p.name}: the last row sets bandwidth_gbps 0 from time_s {out[-1][0]:g} on, for ever "
                         "(every transfer over the link would wait for good); end with a bandwidth > 0, or use "
                         "outages for a link that is down for a while")
    return out


def read_step_times_csv(p: Path) -> list[float]:
    """The step times of a CSV with a 'step_time_s' column; ValueError (one line) if the file is missing or bad."""
    text = read_text(p)
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    header = [c.strip() for c in rows[0]] if rows else []
    if "step_time_s" not in header:
        raise ValueError(f"{p.name}: the header must have a 'step_time_s' column (got {','.join(header)!r})")
    col = header.index("step_time_s")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            v = float(row[col])
        except (ValueError, IndexError):
            raise ValueError(f"{p.name} line {line}: step_time_s must be a number (got {','.join(row)!r})") from None
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{p.name} line {line}: step_time_s must be finite and > 0 (got {v})")
        out.append(v)
    if not out:
        raise ValueError(f"{p.name}: needs at least one step time after the header")
    return out
