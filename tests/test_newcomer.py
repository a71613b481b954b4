"""A newcomer's first minutes: a fresh clone, `make demo`, then the README's next command as printed.

The install is the Makefile's own (`make demo`: a venv, pip, the quickstart run), made offline:
the venv is created first with a .pth line that puts this test's environment's packages ahead
on its path, and `PIP_FLAGS=--no-index --no-build-isolation` keeps pip off the network (torch and the
other dependencies are then "already satisfied"; locosim itself is installed from the clone).
What it does not check: downloading the dependencies from PyPI (CI's `make test` does that).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"


def _first_block(text: str) -> tuple[list[str], str]:
    """The README's first bash block (its command lines) and the text right after it."""
    m = re.search(r"```bash\n(.*?)```\n(.*?)(?=\n## )", text, re.S)
    assert m, "the README has no bash block"
    cmds = [ln.split("#", 1)[0].strip() for ln in m.group(1).splitlines() if ln.strip()]
    return cmds, m.group(2)


def next_command(text: str) -> tuple[str, str]:
    """(the activation line, the first command after it) in the block right under the two commands."""
    cmds, after = _first_block(text)
    assert cmds == ["make demo", "make test"], cmds
    m = re.search(r"```bash\n(.*?)```", after, re.S)
    assert m, "no commands right under `make demo` / `make test`"
    lines = [ln.split("  #", 1)[0].strip() for ln in m.group(1).splitlines() if ln.strip()]
    assert lines[0] == "source .venv/bin/activate", lines
    return lines[0], lines[1]


def test_readme_says_to_activate_right_under_the_two_commands():
    """Right under `make demo` / `make test` the README says `source .venv/bin/activate` and gives a
    `locosim` command to run next."""
    activate, nxt = next_command(README.read_text())
    assert nxt.startswith("locosim ")


def test_make_demo_installs_only_the_core_and_make_test_the_extras():
    """`make demo` installs locosim without extras (no pytest, Playwright, Ray, Triton); `make test`
    installs the test extras on top (dry runs of the Makefile, nothing executed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {**os.environ, "VENV": "/nonexistent-venv"}
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert demo.returncode == 0, demo.stderr
    installs = [ln for ln in demo.stdout.splitlines() if "pip install" in ln]
    assert any(ln.rstrip().endswith("-e .") for ln in installs), installs
    assert not any("[" in ln for ln in installs), installs
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert test.returncode == 0, test.stderr
    assert re.search(r"pip install .*-e \"\.\[test,[^\]]*browser", test.stdout), test.stdout


@pytest.mark.slow
def test_fresh_clone_make_demo_then_the_readme_next_command(tmp_path):
    """In a fresh clone of this repository, `make demo` succeeds (offline, see the module) and then
    the README's next command, as printed, succeeds in a shell that ran the activation line."""
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("needs make and git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(clone / ".venv")], check=True, timeout=300)
    site = subprocess.run([str(clone / ".venv/bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # ahead of the venv's own bundled setuptools (too old for torch's metadata): this environment's packages
    Path(site, "_this_test_deps.pth").write_text(f"import sys; sys.path.insert(0, {sysconfig.get_paths()['purelib']!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    demo = subprocess.run(["make", "demo", f"PY={base}", "PIP_FLAGS=--no-index --no-build-isolation"], cwd=clone,
                          capture_output=True, text=True, env=env, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "source .venv/bin/activate" in demo.stdout
    assert list((clone / "runs").glob("quickstart-*/dashboard.html"))
    activate, nxt = next_command((clone / "README.md").read_text())
    proc = subprocess.run(["bash", "-c", f"{activate} && {nxt}"], cwd=clone, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, f"{nxt}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
