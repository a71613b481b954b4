"""Every flag that writes a file (``bandwidth --json``, ``bandwidth -o``, ``compare -o``, ``--png``)
follows one rule (sim.outputs, issue 28 "Data lost"): it never replaces a file locosim did not
write as that same kind of output (a run's summary.json or dashboard.html, a sweep's files, the
scenario file), never replaces a device or other non-regular file, and refuses before the work.
Runs here are timing-only (no torch), a fraction of a second each."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from sim.cli import main
from sim.outputs import (OutputError, check_png_dir, is_bandwidth_json, is_locosim_png, mark_png, page_kind,
                         write_atomic)

SCENARIO = """\
name: bw
seed: 0
topology:
  regions:
    - {name: us, nodes: 1}
    - {name: eu, nodes: 1}
  links: [{a: us, b: eu, bandwidth_gbps: 1.0, latency_s: 0.05}]
  intra_region: {bandwidth_gbps: 1000.0, latency_s: 0.00001}
timing: {params: 1.0e6, layers: 2, step_time_s: 0.1}
numerics: false
algorithm: {name: diloco, inner_steps: 5}
run:
  max_rounds: 3
"""
BW = ["--grid-points", "3", "--rounds", "2"]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A scenario file, a finished run directory and a finished sweep directory in tmp_path."""
    sc = tmp_path / "bw.yaml"
    sc.write_text(SCENARIO)
    assert main(["run", str(sc), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["sweep", str(sc), "--seeds", "0..0", "--out", str(tmp_path / "sweep"), "--quiet"]) == 0
    return {"scenario": sc, "run": tmp_path / "run", "sweep": tmp_path / "sweep"}


def _victims(world: dict[str, Path]) -> list[Path]:
    run, sweep = world["run"], world["sweep"]
    return [run / "summary.json", run / "manifest.json", run / "dashboard.html", sweep / "sweep.json",
            sweep / "index.parquet", world["scenario"]]


FLAGS = {
    "bandwidth --json": lambda w, target: ["bandwidth", str(w["scenario"]), *BW, "--json", str(target)],
    "bandwidth -o": lambda w, target: ["bandwidth", str(w["scenario"]), *BW, "-o", str(target)],
    "compare -o": lambda w, target: ["compare", str(w["run"]), "-o", str(target)],
}


@pytest.mark.parametrize("flag", list(FLAGS))
def test_no_output_flag_replaces_a_file_locosim_did_not_write(world, flag, capsys):
    """Each file-writing flag aimed at a run's files, a sweep's files or the scenario file exits 2
    with one line naming the flag, and every byte of the target is still there."""
    for target in _victims(world):
        before = target.read_bytes()
        capsys.readouterr()
        assert main(FLAGS[flag](world, target)) == 2, (flag, target)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(target) in err and err.count("\n") == 1, err
        assert target.read_bytes() == before, (flag, target)


@pytest.mark.parametrize("flag", list(FLAGS))
def test_no_output_flag_replaces_a_device(world, flag, tmp_path):
    """A device (a link to /dev/null) or a FIFO is refused, never replaced by a regular file.
    (The device is reached through a link in tmp_path: code with the bug would replace the link,
    never the machine's own /dev/null.)"""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    dev = tmp_path / "devnull"
    dev.symlink_to("/dev/null")
    for target in (dev, fifo):
        assert main(FLAGS[flag](world, target)) == 2
        assert not target.is_symlink() or target.resolve() == Path("/dev/null")
        assert not target.resolve().is_file()


def test_own_outputs_are_replaced_and_other_kinds_are_not(world, tmp_path):
    """A bandwidth JSON or page, or a compare page, written before by the same flag is replaced;
    a page of another kind (a bandwidth page under compare -o) is not."""
    js, page, cmp_page = tmp_path / "bw.json", tmp_path / "bw.html", tmp_path / "cmp.html"
    for _ in range(2):
        assert main(FLAGS["bandwidth --json"](world, js)) == 0
        assert main(FLAGS["bandwidth -o"](world, page)) == 0
        assert main(FLAGS["compare -o"](world, cmp_page)) == 0
    assert is_bandwidth_json(js) and page_kind(page) == "bandwidth" and page_kind(cmp_page) == "compare"
    before = page.read_bytes()
    assert main(FLAGS["compare -o"](world, page)) == 2
    assert main(FLAGS["bandwidth -o"](world, cmp_page)) == 2
    assert page.read_bytes() == before and page_kind(cmp_page) == "compare"


def test_bandwidth_refuses_its_outputs_before_the_search(world, monkeypatch, tmp_path):
    """--json DIR or -o over a foreign file is refused before the search runs at all."""
    import sim.bandwidth

    def no_search(*a, **k):
        raise AssertionError("the search ran before the output was checked")

    monkeypatch.setattr(sim.bandwidth, "search", no_search)
    assert main(FLAGS["bandwidth --json"](world, tmp_path)) == 2
    assert main(FLAGS["bandwidth -o"](world, world["scenario"])) == 2


def _tiny_png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
            + chunk(b"IEND", b""))


def test_png_mark_is_a_valid_chunk_and_recognised(tmp_path):
    """mark_png adds one tEXt chunk with a correct CRC right after IHDR; only a marked PNG is
    recognised as locosim's, and the image data is unchanged."""
    raw = _tiny_png()
    marked = mark_png(raw)
    pos, kinds = 8, []
    while pos < len(marked):
        n, kind = struct.unpack(">I4s", marked[pos:pos + 8])
        body = marked[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", marked[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        kinds.append(kind)
        pos += 12 + n
    assert kinds == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(raw)
    b.write_bytes(marked)
    assert not is_locosim_png(a) and is_locosim_png(b)
    with pytest.raises(OutputError, match="not a PNG locosim wrote"):
        check_png_dir(tmp_path, ["a.png"])
    check_png_dir(tmp_path, ["b.png"])


def test_png_flags_refuse_a_directory_with_foreign_pngs_before_the_work(world, tmp_path):
    """run --png DIR and compare --png DIR with a PNG there that locosim did not write: exit 2,
    nothing claimed, the PNG untouched."""
    d = tmp_path / "pngs"
    d.mkdir()
    (d / "fig-timeline.png").write_bytes(_tiny_png())
    out = tmp_path / "new-run"
    assert main(["run", str(world["scenario"]), "--out", str(out), "--quiet", "--png", str(d)]) == 2
    assert not out.exists()
    assert main(["compare", str(world["run"]), "-o", str(tmp_path / "c.html"), "--png", str(d)]) == 2
    assert not (tmp_path / "c.html").exists()
    assert (d / "fig-timeline.png").read_bytes() == _tiny_png()
    assert main(["run", str(world["scenario"]), "--out", str(out), "--quiet", "--png", str(world["scenario"])]) == 2


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    """A write that fails half-way leaves the earlier file whole and no temporary file behind."""
    target = tmp_path / "x.json"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_output_component_over_255_bytes_is_one_line(world, tmp_path, capsys):
    """An --out, -o or --json path with a component over 255 bytes: exit 2, one line, no traceback."""
    long = "x" * 300
    for argv in (["run", str(world["scenario"]), "--out", str(tmp_path / long), "--quiet"],
                 ["sweep", str(world["scenario"]), "--out", str(tmp_path / long), "--quiet"],
                 FLAGS["compare -o"](world, tmp_path / (long + ".html")),
                 FLAGS["bandwidth --json"](world, tmp_path / long)):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
