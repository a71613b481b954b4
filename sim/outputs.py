"""What an output flag may replace: one rule for every flag that writes a file.

``bandwidth --json FILE``, ``bandwidth -o FILE.html``, ``compare -o FILE.html`` and ``--png DIR``
(run and compare) all go through this module:

* a file that exists is replaced only when locosim wrote it, as the same kind of output, and it
  says so itself: a page carries ``<meta name='generator' content='locosim KIND'>`` (KIND:
  compare, bandwidth, dashboard), a bandwidth JSON its ``grid`` and ``window`` keys, a PNG a
  ``tEXt`` chunk ``Software: locosim``. Anything else (a run's summary.json or dashboard.html,
  a sweep's files, the scenario file, a page of another kind) is refused, nothing replaced;
* something that is not a regular file (a directory, a device such as /dev/null, a pipe) is
  refused, never replaced by a regular file;
* all of this is checked before the work (a search, reading every run), and again at the moment
  of writing; the write itself goes to a temporary file next to the target, then ``os.replace``,
  so a reader never sees half a file.

Run and sweep directories (``--out``) follow their own rule (``sim.rundir``): a run directory is
new or empty, a sweep directory is new, empty or a sweep's.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import tempfile
import zlib
from pathlib import Path

GENERATOR = "locosim"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MARK = (b"Software", b"locosim")
_META = re.compile(r"<meta name='generator' content='locosim ([a-z]+)'>")
# Pages written before the generator mark: recognised by the start of their <title> (compare only
# had such a check before; a bandwidth page's title is as specific).
_OLD_TITLES = {"compare": "<title>locosim compare: ", "bandwidth": "<title>locosim bandwidth: "}


class OutputError(Exception):
    """One line: why an output path is refused (without the flag; the caller adds it)."""


def generator_meta(kind: str) -> str:
    """The mark a page of ``kind`` carries in its <head>."""
    return f"<meta name='generator' content='{GENERATOR} {kind}'>"


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def page_kind(path: str | Path) -> str | None:
    """The KIND of a page locosim wrote (compare, bandwidth, dashboard), else None."""
    head = _head(Path(path)).decode("utf-8", "replace")
    m = _META.search(head)
    if m:
        return m.group(1)
    for kind, title in _OLD_TITLES.items():
        if title in head:
            return kind
    return None


def is_bandwidth_json(path: str | Path) -> bool:
    """Whether ``path`` is a JSON document ``locosim bandwidth --json FILE`` wrote."""
    p = Path(path)
    try:
        if p.stat().st_size > 64 * 2**20:
            return False
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and isinstance(doc.get("grid"), dict) and "window" in doc
            and {"min_gbps", "max_gbps", "points"} <= set(doc["grid"]))


def _png_chunks(data: bytes):
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length], pos
        pos += 12 + length
        if kind == b"IEND":
            return


def is_locosim_png(path: str | Path) -> bool:
    """Whether ``path`` is a PNG locosim wrote (its ``tEXt`` chunk ``Software: locosim``)."""
    data = _head(Path(path), 65536)
    if not data.startswith(PNG_SIGNATURE):
        return False
    for kind, body, _ in _png_chunks(data):
        if kind == b"tEXt" and body == PNG_MARK[0] + b"\0" + PNG_MARK[1]:
            return True
        if kind == b"IDAT":
            return False
    return False


def mark_png(data: bytes) -> bytes:
    """The PNG ``data`` with a ``tEXt`` chunk ``Software: locosim`` right after its header."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    for kind, body, pos in _png_chunks(data):
        if kind == b"IHDR":
            end = pos + 12 + len(body)
            text = PNG_MARK[0] + b"\0" + PNG_MARK[1]
            chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
            return data[:end] + chunk + data[end:]
    return data


def _name_ok(path: Path) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise OutputError(f"a path component is {len(os.fsencode(part))} bytes long; at most 255 are allowed")


def _parent_ok(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write there (no such directory {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write there (not writable {parent})")


def check_file(path: str | Path, kind: str, may_replace) -> Path:
    """Refuse (OutputError) to write an output of ``kind`` at ``path`` unless it is new, or a
    regular file ``may_replace(path)`` recognises as one locosim wrote. Returns the path to
    write (a symlink's target: the link itself stays)."""
    p = Path(path)
    _name_ok(p)
    if p.is_symlink() and not p.exists():
        raise OutputError("is a symbolic link to nothing; name a file")
    if p.exists():
        if p.is_dir():
            raise OutputError("is a directory; name the file to write")
        if not stat.S_ISREG(os.stat(p).st_mode):
            raise OutputError("exists and is not a regular file (a device, pipe or socket); name a regular file "
                              "(nothing was written)")
        if not may_replace(p):
            raise OutputError(f"exists and is not a {kind} locosim wrote; name a new file (nothing was replaced)")
        p = p.resolve()
    _parent_ok(p)
    return p


def check_page(path: str | Path, kind: str) -> Path:
    """``check_file`` for an HTML page of ``kind`` (compare, bandwidth)."""
    return check_file(path, f"{kind} page", lambda q: page_kind(q) == kind)


def check_bandwidth_json(path: str | Path) -> Path:
    return check_file(path, "bandwidth JSON", is_bandwidth_json)


def check_png_dir(path: str | Path, names: list[str] | None = None) -> Path:
    """Refuse a PNG directory that is not a directory, or that holds a file named like one we
    would write (``names``; without names: any ``*.png``) which locosim did not write."""
    p = Path(path)
    _name_ok(p)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise OutputError("exists and is not a directory; name a directory for the PNGs")
        files = [p / n for n in names] if names is not None else sorted(p.glob("*.png"))
        for f in files:
            if f.exists() or f.is_symlink():
                if not f.is_file() or not stat.S_ISREG(os.stat(f).st_mode):
                    raise OutputError(f"{f.name} there is not a regular file (nothing was written)")
                if not is_locosim_png(f):
                    raise OutputError(f"{f.name} there is not a PNG locosim wrote; name a new directory "
                                      "(nothing was replaced)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError("cannot write there (not writable)")
    else:
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise OutputError(f"cannot create it ({anc} is not a directory)")
    return p


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace`` (a reader never sees half a file; a failed write leaves the old one)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
