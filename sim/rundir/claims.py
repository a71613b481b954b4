"""Run and sweep directories are never lost or overwritten (claims and the sweep lock).

* **Claims.** A run directory is claimed atomically before any work: an exclusive ``mkdir``
  (or, for an existing empty directory, an exclusive create of its ``manifest.json``), so of
  two commands given the same ``--out`` at once exactly one gets it. A default name
  (``runs/NAME-TIMESTAMP``) that is taken gets a suffix ``-2``, ``-3``, ... instead.
  ``run_to_dir`` later replaces the placeholder manifest with the real one; a run that never
  starts (bad input found while building) releases its claim, so nothing is left behind.
* **Sweep lock.** ``OUT/sweep.lock`` holds the owner's pid and host under an ``flock``: a
  second sweep on the same directory is refused while the first lives (it would delete the
  first's run in progress when "resuming" it); a lock left by a process that died is taken
  over with a note. The kernel drops an ``flock`` when its holder dies, so a stale lock is
  exactly one nobody holds; the pid in the file is what the messages name.
Separate from ``sim.rundir.contract`` (what a run directory holds) because this is about who
may write a directory at all, before anything of a run exists.

Not covered: two hosts sharing a network file system without working ``flock``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from sim.rundir.contract import INDEX, LOCK, MANIFEST, STATUS_STARTING, SWEEP_JSON, RunDirError

MAX_SUFFIX = 1000  # runs/NAME-TIMESTAMP-2 ... -999: more runs in one second than anyone starts by hand


class RunDirTaken(RunDirError):
    """The directory exists (and is not an empty one this call may use) or another run claimed it."""


def _owner() -> dict:
    return {"pid": os.getpid(), "host": platform.node()}


@dataclass
class Claim:
    """A directory this process claimed; ``release()`` undoes a claim whose run never started."""
    path: Path
    made: list[Path] = field(default_factory=list)  # directories the claim created, deepest first
    placeholder: bool = True

    def release(self) -> None:
        """Remove the placeholder manifest (if it is still ours) and the directories the claim
        created, if they are empty; anything else is left alone."""
        if self.placeholder:
            manifest = self.path / MANIFEST
            try:
                if json.loads(manifest.read_text()).get("claim") == _owner():
                    manifest.unlink()
            except (OSError, ValueError, AttributeError):
                pass
        for d in self.made:
            try:
                d.rmdir()
            except OSError:
                break


def claim_dir(path: str | Path, new_only: bool = False, placeholder: bool = True) -> Claim:
    """Claim ``path`` for one run: create it (and its parents), or take an existing empty
    directory unless ``new_only``. With ``placeholder`` the claim is a ``manifest.json``
    created exclusively (status ``starting``, the claimer's pid and host), which both marks the
    directory as a run's and makes two claims of the same empty directory exclusive.
    RunDirTaken when it exists and is not empty (or another process got it first),
    RunDirError when it cannot be created. The claim's path is absolute: a plug-in that changes
    the working directory during the run does not move where its results go."""
    path = Path(os.path.abspath(path))
    for part in path.parts:  # before any stat(): a name the file system cannot hold is one line, not ENAMETOOLONG
        if len(os.fsencode(part)) > 255:
            raise RunDirError(f"a path component is {len(os.fsencode(part))} bytes long; at most 255 are allowed")
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent is a file, is not writable, is /proc ...
        why = "a parent is a file" if isinstance(err, (FileExistsError, NotADirectoryError)) else err.strerror
        raise RunDirError(f"cannot create its parent directory ({why or type(err).__name__})") from None
    try:
        path.mkdir()
        made = missing
    except FileExistsError:
        if new_only:
            raise RunDirTaken("already exists") from None
        if not path.is_dir():
            raise RunDirTaken("exists and is not a directory") from None
        made = []
    except OSError as err:
        raise RunDirError(f"cannot create the directory ({err.strerror or type(err).__name__})") from None
    claim = Claim(path, made, placeholder)
    try:
        if not made and any(path.iterdir()):
            raise RunDirTaken("already exists and is not empty; choose a new directory (nothing is overwritten)")
        if placeholder:
            try:
                fd = os.open(path / MANIFEST, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise RunDirTaken("another run claimed it at the same moment; choose a new directory") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"status": STATUS_STARTING, "claim": _owner(),
                           "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}, f)
    except OSError as err:
        claim.release()
        raise RunDirError(f"cannot write in the directory ({err.strerror or type(err).__name__})") from None
    except RunDirError:
        claim.release()
        raise
    return claim


def claim_unique(base: str | Path, placeholder: bool = True) -> Claim:
    """Claim ``base``, or ``base-2``, ``base-3``, ... whichever is free first (each an exclusive
    mkdir): for default directory names, which two commands started in the same second share."""
    base = Path(base)
    for i in range(1, MAX_SUFFIX):
        candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            return claim_dir(candidate, new_only=True, placeholder=placeholder)
        except RunDirTaken:
            continue
    raise RunDirError(f"{base}-2 ... -{MAX_SUFFIX - 1} are all taken; give --out")


def claim_variants(out: str | Path | None, default: Path | None, variants: list[str | None]) -> tuple[Claim, dict]:
    """Claim a run's directory, and for a file with variants each OUT/<variant> too, before
    anything is built: ``out`` (a claim of a new or empty directory) or, without it, ``default``
    made unique (``claim_unique``); of two commands given the same ``out`` at once exactly one
    gets it. ``variants``: the names (``[None]`` for a file without variants), claimed in this
    order in every process, so whoever gets the first gets them all. Returns (the top claim,
    {variant: its run directory's claim}). RunDirError "PATH: reason" naming the path that
    failed (``out`` as given); the claims made so far are released."""
    single = variants == [None]
    try:
        top = claim_dir(Path(out), placeholder=single) if out else claim_unique(default, placeholder=single)
    except RunDirError as err:
        raise RunDirError(f"{out or default}: {err}") from None
    if single:
        return top, {None: top}
    claims: dict = {}
    for name in variants:
        try:
            claims[name] = claim_dir(top.path / name, new_only=True)
        except RunDirError as err:
            for c in reversed([top, *claims.values()]):
                c.release()
            raise RunDirError(f"{top.path / name}: {err}") from None
    return top, claims


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_JSON).is_file() or (path / INDEX).is_file()


# ---------------------------------------------------------------------------------------- sweep lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class SweepLocked(RunDirError):
    """Another live process holds the sweep directory's lock."""


class SweepLock:
    """``OUT/sweep.lock`` for as long as a sweep runs (a context manager). ``note`` says when a
    stale lock (its owner died) was taken over."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.fd: int | None = None
        self.note: str | None = None

    def acquire(self) -> "SweepLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot create the lock file {self.path} ({err.strerror or type(err).__name__})") from None
        try:
            previous = self._read(fd)
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = False
            except BlockingIOError:
                held = True
            except ImportError:  # no flock (Windows): the pid in the file decides
                held = bool(previous) and previous.get("host") == platform.node() and _pid_alive(previous.get("pid", -1))
            if held:
                previous = self._read(fd) or previous
                who = f"pid {previous.get('pid', '?')} on {previous.get('host', '?')}" if previous else "another process"
                raise SweepLocked(f"in use by a running sweep ({who}; lock {self.path}); wait for it to finish "
                                  "(nothing was changed)")
            if previous and previous.get("pid") not in (None, os.getpid()):
                self.note = (f"note: took over the stale lock {self.path} of pid {previous.get('pid')} on "
                             f"{previous.get('host', '?')}, which is no longer running")
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps({**_owner(), "started_at": _dt.datetime.now(_dt.timezone.utc)
                                       .isoformat(timespec="seconds")}) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def release(self) -> None:
        """Empty the file (a clean end leaves no pid behind) and drop the lock. The file itself
        stays: deleting a locked file lets a third process lock a new file with the same name."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "SweepLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
