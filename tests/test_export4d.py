"""The 4D export's delta encoding (issue 7: a static layer once, then per frame only what changed).

A small training folder is written directly in the trainer's layout (``dynamic/sequence_io.py``: ``static.pt``,
``frames/NNNNNN.pt`` with ids and raw parameters, ``state.json``): a few Gaussians move every frame, one moves by
one float32 step, some only turn, one moves and turns, some change colour, size or opacity (one of them while
moving), one changes below the .splat quantisation, one changes only its higher SH bands, one is pruned at frame
2, the rest stay bit-identical. The SWD3 delta export must hold exactly the changed rows, each in the smallest kind
that reproduces it (motion records: position and rotation; motion+rgba: position, colour/opacity and rotation; full
records for a changed size or a pruned row), and every frame must read back as the full-layer (``.splat``) export
of the same frame shows it. SWD2 and SWD1 deltas of older exports must still read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from splatworks.dynamic import export4d as e4
from splatworks.dynamic import sequence_io as sio
from splatworks.errors import InputError, UserError
from splatworks.splat.io import SH_C0

N_FRAMES = 5
STATIC_IDS = np.array([0, 7, 13, 21, 30])
DYN_IDS = np.array([i for i in range(45) if i not in STATIC_IDS])  # M = 40, ids interleaved with the static ones
MOVING = DYN_IDS[:5]        # rows 0..4: move every frame
PRUNED, PRUNED_AT = DYN_IDS[7], 2
BELOW_QUANT = DYN_IDS[9]    # colour changes by far less than one 8-bit step: same bytes, not in any delta
ONE_ULP = DYN_IDS[11]       # x moves by one float32 step: different bytes, in every delta
SH_ONLY = DYN_IDS[12]       # only shN changes: a .splat does not store it, not in any delta
TURNING = DYN_IDS[14:17]    # only the rotation changes: motion records
MOVE_TURN = DYN_IDS[17]     # moves and turns: a motion record
RECOLOUR = DYN_IDS[18:20]   # colour changes by whole 8-bit levels: motion+rgba records
RESCALE = DYN_IDS[20]       # size changes: a full record
FADE = DYN_IDS[21]          # only the opacity (alpha byte) changes: a motion+rgba record
MOVE_RECOLOUR = DYN_IDS[22]  # moves and changes colour: a motion+rgba record
MOVE_FADE = DYN_IDS[23]     # moves, turns and fades (sequential training's default frame_params): motion+rgba
MOTION_IDS = np.sort(np.concatenate([MOVING, [ONE_ULP], TURNING, [MOVE_TURN]]))
RGBA_IDS = np.sort(np.concatenate([RECOLOUR, [FADE, MOVE_RECOLOUR, MOVE_FADE]]))
FULL_IDS = np.array([RESCALE])


def _params(ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(ids)
    # Colours in the middle of an 8-bit bucket, so a change of 1e-4 cannot cross into the next one.
    levels = rng.integers(20, 230, size=(n, 3)) + 0.5
    return {
        "means": rng.normal(size=(n, 3)).astype(np.float32),
        "quats": rng.normal(size=(n, 4)).astype(np.float32),
        "scales": rng.uniform(-4, -1, size=(n, 3)).astype(np.float32),
        "opacities": rng.normal(size=n).astype(np.float32),
        "sh0": (((levels / 255.0) - 0.5) / SH_C0).astype(np.float32)[:, None, :],
        "shN": rng.normal(size=(n, 3, 3)).astype(np.float32),
    }


def _save(path: Path, ids: np.ndarray, params: dict[str, np.ndarray], rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"ids": torch.from_numpy(ids[rows].astype(np.int64)),
                **{k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in params.items()}}, path)


def frame_params(i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Ids and raw parameters of the dynamic layer at frame index i (the trainer's truth)."""
    p = _params(DYN_IDS, seed=1)
    row = {int(g): r for r, g in enumerate(DYN_IDS)}
    for g in MOVING:
        p["means"][row[g]] += np.float32(0.1 * i)
    x = p["means"][row[ONE_ULP], 0]
    for _ in range(i):
        x = np.nextafter(x, np.float32(np.inf), dtype=np.float32)
    p["means"][row[ONE_ULP], 0] = x
    p["sh0"][row[BELOW_QUANT]] += np.float32(1e-4 * i)
    p["shN"][row[SH_ONLY]] += np.float32(0.5 * i)
    for k, g in enumerate([*TURNING, MOVE_TURN]):  # about z by 0.3 rad a frame: every quantised component moves
        angle = 0.2 * k + 0.3 * i
        p["quats"][row[g]] = np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)], dtype=np.float32)
    p["means"][row[MOVE_TURN]] += np.float32(0.05 * i)
    for g in [*RECOLOUR, MOVE_RECOLOUR]:
        p["sh0"][row[g]] += np.float32(3 * i / 255 / SH_C0)  # three 8-bit levels a frame (from a bucket's middle)
    p["means"][row[MOVE_RECOLOUR]] -= np.float32(0.05 * i)
    p["scales"][row[RESCALE]] += np.float32(0.2 * i)
    p["opacities"][row[FADE]] = np.float32(0.3 * i)
    p["means"][row[MOVE_FADE]] += np.float32(0.07 * i)
    p["quats"][row[MOVE_FADE]] += np.float32(0.2 * i)
    p["opacities"][row[MOVE_FADE]] = np.float32(-0.4 * i)
    keep = np.ones(len(DYN_IDS), dtype=bool)
    if i >= PRUNED_AT:
        keep[row[PRUNED]] = False
    return DYN_IDS[keep], {k: v[keep] for k, v in p.items()}


def write_run(root: Path, n_done: int = N_FRAMES, frame_numbers: list[int] | None = None, shuffle: bool = True
              ) -> Path:
    """A training folder in the trainer's layout with ``n_done`` of N_FRAMES frames finished (rows in a random
    order, or in id order as the trainer writes them)."""
    numbers = frame_numbers or [10 + 2 * i for i in range(N_FRAMES)]
    _save(root / sio.STATIC_FILE, STATIC_IDS, _params(STATIC_IDS, seed=0), np.arange(len(STATIC_IDS)))
    rng = np.random.default_rng(7)
    for i in range(n_done):
        ids, p = frame_params(i)
        rows = rng.permutation(len(ids)) if shuffle else np.arange(len(ids))  # the export sorts by id
        _save(sio.frame_file(root, numbers[i]), ids, p, rows)
    (root / sio.STATE_FILE).write_text(json.dumps({"frames_done": numbers[:n_done], "frames_total": N_FRAMES}))
    (root / "source.json").write_text(json.dumps({"fps": 12.0}))
    return root


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export4d")
    run = write_run(root / "run")
    e4.export_4d(run, root / "delta")
    e4.export_4d(run, root / "full", encoding="full")
    return {"run": run, "delta": root / "delta", "full": root / "full", "root": root}


def _drawn(layers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rows that draw something, in a canonical order (by position), to compare two exports row for row."""
    keep = layers["scales"].max(dim=1).values > -20  # a pruned row: scales 0 read back as log(1e-12)
    rows = {k: v[keep] for k, v in layers.items()}
    m = rows["means"].numpy()
    order = torch.from_numpy(np.lexsort((m[:, 2], m[:, 1], m[:, 0])))
    return {k: v[order] for k, v in rows.items()}


def test_manifest_and_delta_sizes(exports):
    m = e4.load_manifest(exports["delta"])
    assert m["schema"] == "splatworks.4d/2" and m["encoding"] == "delta" and m["delta_format"] == "SWD3"
    assert m["dynamic_count"] == len(DYN_IDS) and m["frames"] == m["frames_ready"] == N_FRAMES
    assert m["fps"] == 12.0 and m["frame_numbers"] == [10, 12, 14, 16, 18] and m["static"] == "static.splat"
    assert m["frame_files"] == m["frame_urls"] == ["frames/000000.splat"] + [f"frames/{i:06d}.swd"
                                                                              for i in range(1, N_FRAMES)]
    sizes = [(exports["delta"] / f).stat().st_size for f in m["frame_files"]]
    assert m["bytes"]["per_frame"] == sizes
    assert sizes[0] == 32 * len(DYN_IDS)
    # Motion records (20 B) for rows that only move and/or turn, motion+rgba records (24 B) for rows whose colour
    # or opacity changed too, full records (36 B) for a size change and for the pruned row (once, at frame 2):
    # exactly these rows, in frame 0's (id-ordered) row order.
    row = {int(g): r for r, g in enumerate(DYN_IDS)}
    motion = sorted(row[int(g)] for g in MOTION_IDS)
    rgba = sorted(row[int(g)] for g in RGBA_IDS)
    for i in range(1, N_FRAMES):
        full = sorted(row[int(g)] for g in [*FULL_IDS, *([PRUNED] if i == PRUNED_AT else [])])
        data = (exports["delta"] / m["frame_files"][i]).read_bytes()
        assert data[:4] == b"SWD3"
        assert np.frombuffer(data[4:20], "<u4").tolist() == [len(full), len(motion), len(rgba), len(DYN_IDS)]
        d = e4.decode_delta(data, len(DYN_IDS))
        assert (d.full_rows.tolist(), d.motion_rows.tolist(), d.motion_rgba_rows.tolist()) == (full, motion, rgba), i
        assert d.full_records.shape == (len(full), 32) and d.motion_records.shape == (len(motion), 16)
        assert d.motion_rgba_records.shape == (len(rgba), 20)
        # The file is exactly header + its records: 20 + 36 F + 20 P + 24 Q bytes.
        assert sizes[i] == len(data) == 20 + 36 * len(full) + 20 * len(motion) + 24 * len(rgba)
        assert sizes[i] == e4.swd3_size(len(full), len(motion), len(rgba))
        counts = (m["records"]["full"][i], m["records"]["motion"][i], m["records"]["motion_rgba"][i])
        assert counts == (len(full), len(motion), len(rgba))
        prev, cur = (e4.dynamic_layer_records(exports["delta"], j) for j in (i - 1, i))
        # A motion record is the row's position and rotation bytes at this frame; the rest of the row is as before.
        assert np.array_equal(d.motion_records, np.concatenate([cur[motion, :12], cur[motion, 28:]], axis=1))
        assert np.array_equal(cur[motion, 12:28], prev[motion, 12:28])
        assert (cur[motion, :12] != prev[motion, :12]).any() or (cur[motion, 28:] != prev[motion, 28:]).any()
        # A motion+rgba record: position, RGBA, rotation; the scale bytes stay, the RGBA bytes did change.
        assert np.array_equal(d.motion_rgba_records, np.concatenate([cur[rgba, :12], cur[rgba, 24:]], axis=1))
        assert np.array_equal(cur[rgba, 12:24], prev[rgba, 12:24])
        assert (cur[rgba, 24:28] != prev[rgba, 24:28]).any(axis=1).all()
        fade = row[int(FADE)]  # only its alpha byte changed
        assert np.array_equal(np.flatnonzero(cur[fade] != prev[fade]), [27])
        assert np.array_equal(d.full_records, cur[full])
        assert (cur[full, 12:24] != prev[full, 12:24]).any(axis=1).all()  # full only where the scale changed
    assert [m["records"][k][0] for k in ("full", "motion", "motion_rgba")] == [len(DYN_IDS), 0, 0]
    assert m["bytes"]["per_frame_mean_after_first"] == pytest.approx(np.mean(sizes[1:]))
    assert m["bytes"]["total"] == m["bytes"]["static"] + sum(sizes) and m["bytes"]["per_frame_max"] == sizes[0]
    full = e4.load_manifest(exports["full"])
    assert full["schema"] == "splatworks.4d/1" and "encoding" not in full and "records" not in full
    assert full["bytes"]["per_frame"][1] == 32 * len(DYN_IDS)  # what the delta saves


def test_every_frame_reads_back_as_the_full_export_shows_it(exports):
    static_n = len(STATIC_IDS)
    for i in range(N_FRAMES):
        delta = e4.load_frame_layers(exports["delta"], i)
        full = e4.load_frame_layers(exports["full"], i)
        assert len(delta["means"]) == static_n + len(DYN_IDS)  # pruned rows stay, drawing nothing
        for k in ("means", "quats", "scales", "opacities", "sh0"):
            assert torch.equal(delta[k][:static_n], full[k][:static_n]), k  # the same static layer
        a, b = _drawn(delta), _drawn(full)
        assert len(a["means"]) == static_n + len(frame_params(i)[0])
        for k in a:
            assert torch.equal(a[k], b[k]), (i, k)
        # .splat precision of the trainer's own values: float32 positions are exact.
        truth = np.concatenate([_params(STATIC_IDS, seed=0)["means"], frame_params(i)[1]["means"]])
        t = truth[np.lexsort((truth[:, 2], truth[:, 1], truth[:, 0]))]
        assert np.array_equal(a["means"].numpy(), t)
    moved = e4.load_frame_layers(exports["delta"], 3)["means"][static_n:static_n + len(MOVING)]
    first = e4.load_frame_layers(exports["delta"], 0)["means"][static_n:static_n + len(MOVING)]
    assert torch.allclose(moved - first, torch.full_like(moved, 0.3), atol=1e-5)


def test_incremental_encoding_matches_encoding_every_frame_whole(tmp_path):
    """The encoder re-encodes only rows whose raw values changed: its layers must equal a brute-force encoding of
    every frame (rows in id order as the trainer writes them, the fast path without searching ids)."""
    run = write_run(tmp_path / "run", shuffle=False)
    e4.export_4d(run, tmp_path / "exp")
    expect = None
    for i in range(N_FRAMES):
        ids, p = frame_params(i)
        whole = e4.splat_records({k: torch.from_numpy(v) for k, v in p.items()})
        if expect is None:
            expect = whole
        else:
            present = np.isin(DYN_IDS, ids)
            nxt = e4.hidden_records(expect)  # absent rows: hidden (hiding a hidden row changes nothing)
            nxt[present] = whole
            expect = nxt
        assert np.array_equal(e4.dynamic_layer_records(tmp_path / "exp", i), expect), i


def test_pruned_row_draws_nothing_from_its_frame_on(exports):
    row = int(np.flatnonzero(DYN_IDS == PRUNED)[0])
    before = e4.dynamic_layer_records(exports["delta"], PRUNED_AT - 1)[row]
    assert before[27] > 0 and np.frombuffer(before[12:24].tobytes(), "<f4").min() > 0
    for i in range(PRUNED_AT, N_FRAMES):
        rec = e4.dynamic_layer_records(exports["delta"], i)[row]
        assert rec[27] == 0 and not rec[12:24].any(), i          # opacity byte 0, scales 0
        assert np.array_equal(rec[:12], before[:12])            # it stays where it was (no bounding-box jump)


def test_broken_delta_files_give_clear_errors(exports, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(exports["delta"], bad)
    f2 = bad / "frames" / "000002.swd"
    good = f2.read_bytes()
    m = len(DYN_IDS)
    d = e4.decode_delta(good, m)
    f, p, q = len(d.full_rows), len(d.motion_rows), len(d.motion_rgba_rows)
    assert f >= 2 and p >= 2 and q >= 2
    at = 20 + 36 * f  # where the motion rows start
    aq = at + 20 * p  # where the motion+rgba rows start

    def u32(v: int) -> bytes:
        return int(v).to_bytes(4, "little")

    def swap(data: bytes, at: int) -> bytes:  # the two row indices at ``at`` and ``at + 4`` in the wrong order
        return data[:at] + data[at + 4:at + 8] + data[at:at + 4] + data[at + 8:]

    overlap = e4.Delta(m, d.full_rows, d.full_records, np.sort(np.append(d.motion_rows[1:], d.full_rows[0])),
                       d.motion_records, d.motion_rgba_rows, d.motion_rgba_records).encode()
    overlap_rgba = e4.Delta(m, d.full_rows, d.full_records, d.motion_rows, d.motion_records,
                            np.sort(np.append(d.motion_rgba_rows[1:], d.motion_rows[0])), d.motion_rgba_records
                            ).encode()
    assert len(overlap) == len(overlap_rgba) == len(good)
    cases = {
        "truncated": good[:-5],
        "not a SWD3, SWD2 or SWD1": b"XXXX" + good[4:],
        "another run": good[:16] + u32(m + 1) + good[20:],
        "full row indices must be strictly ascending": swap(good, 20),
        "motion row indices must be strictly ascending": swap(good, at),
        "motion row indices must be .* below 40": good[:at + 4 * p - 4] + u32(m) + good[at + 4 * p:],
        r"motion\+rgba row indices must be strictly ascending": swap(good, aq),
        r"motion\+rgba row indices must be .* below 40": good[:aq + 4 * q - 4] + u32(m) + good[aq + 4 * q:],
        "both a full and a motion record": overlap,
        r"both a motion and a motion\+rgba record": overlap_rgba,
        r"4294967295 motion and \d+ motion\+rgba records .* truncated or garbled": good[:8] + u32(2**32 - 1)
                                                                                   + good[12:],
        "too short for a SWD3 delta": good[:19],
        "too short for a delta file": good[:3],
    }
    for words, data in cases.items():
        f2.write_bytes(data)
        with pytest.raises(InputError, match=words) as err:
            e4.load_frame_layers(bad, 3)
        assert "000002.swd" in str(err.value)
        assert e4.load_frame_layers(bad, 1)["means"].shape[0] > 0  # earlier frames still read
    f2.write_bytes(good)
    assert all(torch.equal(a, b) for a, b in zip(e4.load_frame_layers(bad, 3).values(),
                                                 e4.load_frame_layers(exports["delta"], 3).values()))
    f2.unlink()
    with pytest.raises(InputError, match="missing"):
        e4.load_frame_layers(bad, 2)


def older_delta(prev: np.ndarray, cur: np.ndarray, fmt: str) -> bytes:
    """The delta from ``prev`` to ``cur`` as an export before SWD3 wrote it: SWD1 (full records only, its own
    encoder) or SWD2 (full and motion records: the SWD2 choice of kinds, then the SWD2 layout)."""
    if fmt == "SWD1":
        rows = e4.changed_rows(prev, cur)
        return e4.encode_swd1(rows, cur[rows], len(cur))
    return e4.Delta.between(prev, cur, b"SWD2").encode(b"SWD2")


@pytest.mark.parametrize("fmt", ["SWD1", "SWD2"])
def test_older_exports_still_read_and_are_rewritten_as_swd3(exports, tmp_path, fmt):
    """An export written before SWD3: the same frames as SWD2 deltas (full and motion records: the colour and
    opacity changes are full records there) or SWD1 deltas (full records only)."""
    old = tmp_path / "old"
    shutil.copytree(exports["delta"], old)
    man = json.loads((old / "manifest.json").read_text())
    man["delta_format"] = fmt
    del man["records"]
    m = len(DYN_IDS)
    layers = [e4.dynamic_layer_records(exports["delta"], i) for i in range(N_FRAMES)]
    for i in range(1, N_FRAMES):
        rows = e4.changed_rows(layers[i - 1], layers[i])
        data = older_delta(layers[i - 1], layers[i], fmt)
        d = e4.decode_delta(data, m)
        assert data[:4] == fmt.encode() and len(d.motion_rgba_rows) == 0 and d.motion_rgba_records.shape == (0, 20)
        if fmt == "SWD1":
            assert len(data) == 12 + 36 * len(rows)
            assert d.full_rows.tolist() == rows.tolist() and len(d.motion_rows) == 0
            assert d.motion_records.shape == (0, 16)
        else:  # what SWD3 stores as motion+rgba records is stored whole
            new = e4.decode_delta((exports["delta"] / man["frame_files"][i]).read_bytes(), m)
            assert d.motion_rows.tolist() == new.motion_rows.tolist() and len(new.motion_rgba_rows) >= 4
            assert d.full_rows.tolist() == sorted([*new.full_rows, *new.motion_rgba_rows])
            assert len(data) == 16 + 36 * len(d.full_rows) + 20 * len(d.motion_rows)
            assert len(data) == e4.swd2_size(len(d.full_rows), len(d.motion_rows)) > man["bytes"]["per_frame"][i]
        (old / man["frame_files"][i]).write_bytes(data)
        man["bytes"]["per_frame"][i] = len(data)
        assert e4.layer_file_is_complete(old / man["frame_files"][i])
    (old / "manifest.json").write_text(json.dumps(man))
    for i in range(N_FRAMES):
        assert np.array_equal(e4.dynamic_layer_records(old, i), layers[i]), i
        a, b = e4.load_frame_layers(old, i), e4.load_frame_layers(exports["delta"], i)
        assert all(torch.equal(a[k], b[k]) for k in a), i
    f3 = old / man["frame_files"][3]
    good = f3.read_bytes()
    header = 12 if fmt == "SWD1" else 16
    for words, data in {"truncated": good[:-1],
                        "strictly ascending": good[:header] + good[header + 4:header + 8] + good[header:header + 4]
                        + good[header + 8:],
                        "another run": good[:header - 4] + (m - 1).to_bytes(4, "little") + good[header:],
                        f"too short for a {fmt} delta": good[:header - 3]}.items():
        f3.write_bytes(data)
        with pytest.raises(InputError, match=words):
            e4.load_frame_layers(old, 3)
    f3.write_bytes(good)
    # Re-exporting into the same folder rewrites the deltas as SWD3: the files of a fresh export, byte for byte.
    m2 = e4.export_4d(exports["run"], old)
    assert m2["delta_format"] == "SWD3"
    for rel in m2["frame_files"]:
        assert (old / rel).read_bytes() == (exports["delta"] / rel).read_bytes(), rel


def test_delta_round_trips_any_change_and_picks_the_smaller_record():
    """Random layers, rows changed in every combination of byte ranges: the decoded delta applied to the previous
    layer gives the new one byte for byte; each row in the smallest kind that holds its change (motion: bytes
    12-27 unchanged; motion+rgba: bytes 12-23 unchanged; full otherwise), in SWD3 and in the older SWD2."""
    rng = np.random.default_rng(3)
    m = 600
    prev = rng.integers(0, 256, size=(m, 32), dtype=np.uint8)
    cur = prev.copy()
    ranges = {"position": (0, 12), "scale": (12, 24), "rgba": (24, 28), "rotation": (28, 32)}
    kinds = rng.integers(0, 16, size=m)  # bit set per range: which byte ranges of the row change
    for bit, (lo, hi) in enumerate(ranges.values()):
        for r in np.flatnonzero(kinds & (1 << bit)):
            k = rng.integers(lo, hi)
            cur[r, k] ^= rng.integers(1, 256, dtype=np.uint8)  # one byte of that range, always a real change
    scale, rgba = (kinds & 2).astype(bool), (kinds & 4).astype(bool)
    expect_full = np.flatnonzero(scale)
    expect_rgba = np.flatnonzero(rgba & ~scale)
    expect_motion = np.flatnonzero((kinds != 0) & ~scale & ~rgba)
    assert min(len(expect_full), len(expect_rgba), len(expect_motion)) > 50
    d = e4.Delta.between(prev, cur)
    assert d.full_rows.tolist() == expect_full.tolist() and d.motion_rows.tolist() == expect_motion.tolist()
    assert d.motion_rgba_rows.tolist() == expect_rgba.tolist()
    assert d.counts() == {"full": len(expect_full), "motion": len(expect_motion), "motion_rgba": len(expect_rgba)}
    data = d.encode()
    assert len(data) == 20 + 36 * len(expect_full) + 20 * len(expect_motion) + 24 * len(expect_rgba)
    out = prev.copy()
    e4.decode_delta(data, m).apply(out)
    assert np.array_equal(out, cur)
    # The older encoder's choice (SWD2: no motion+rgba kind) round-trips too, at a larger size.
    d2 = e4.Delta.between(prev, cur, b"SWD2")
    assert d2.full_rows.tolist() == np.flatnonzero(scale | rgba).tolist() and len(d2.motion_rgba_rows) == 0
    swd2 = d2.encode(b"SWD2")
    assert swd2[:4] == b"SWD2" and len(swd2) == e4.swd2_size(len(d2.full_rows), len(d2.motion_rows)) > len(data)
    out2 = prev.copy()
    e4.decode_delta(swd2, m).apply(out2)
    assert np.array_equal(out2, cur)
    with pytest.raises(ValueError, match="SWD2 delta cannot hold motion_rgba"):
        d.encode(b"SWD2")
    empty = e4.Delta.between(cur, cur.copy())
    assert empty.rows == 0 and empty.encode() == b"SWD3" + bytes(12) + m.to_bytes(4, "little")
    same = cur.copy()
    e4.decode_delta(empty.encode(), m).apply(same)
    assert np.array_equal(same, cur)


def test_reexport_while_training_grows_and_rejects_new_ids(tmp_path):
    run = write_run(tmp_path / "run", n_done=3)
    out = tmp_path / "exp"
    e4.export_4d(run, out, encoding="full")  # an older export in the same folder: its layers get replaced
    m = e4.export_4d(run, out)
    assert m["frames_ready"] == 3 and m["frames"] == N_FRAMES and m["bytes"]["per_frame_mean_after_first"] > 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000000.splat", "000001.swd", "000002.swd"]
    before = {f: (out / f).read_bytes() for f in m["frame_files"]}
    write_run(run, n_done=N_FRAMES)  # training went on
    m2 = e4.export_4d(run, out)
    assert m2["frames_ready"] == N_FRAMES and all((out / f).read_bytes() == b for f, b in before.items())
    assert e4.load_manifest(out) == m2
    # A frame with a Gaussian that frame 0 never had (densification after frame 0): refused, nothing lost.
    ids, p = frame_params(N_FRAMES - 1)
    _save(sio.frame_file(run, 18), np.append(ids, 999), {k: np.concatenate([v, v[:1]]) for k, v in p.items()},
          np.arange(len(ids) + 1))
    with pytest.raises(UserError, match=r"frame 18 .* Gaussians that frame 10 does not \(e\.g\. id 999\)"):
        e4.export_4d(run, out)
    assert e4.load_manifest(out) == m2
    with pytest.raises(UserError, match="encoding"):
        e4.export_4d(run, out, encoding="zip")


def test_change_detection_is_vectorised_bytes():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(1000, 32), dtype=np.uint8)
    b = a.copy()
    b[[3, 500, 999], [0, 31, 17]] ^= 1  # one bit in three rows, at either end of the record
    assert e4.changed_rows(a, b).tolist() == [3, 500, 999]
    assert e4.changed_rows(a, a.copy()).size == 0
    data = e4.encode_swd1(np.array([3, 500]), b[[3, 500]], 1000)
    d = e4.decode_delta(data, 1000)
    assert d.full_rows.tolist() == [3, 500] and np.array_equal(d.full_records, b[[3, 500]]) and data[:4] == b"SWD1"
    layer = e4.hidden_records(a[:2])
    assert not layer[:, 12:24].any() and not layer[:, 27].any() and np.array_equal(layer[:, :12], a[:2, :12])
    assert len(data) == 12 + 2 * 36


def test_layer_files_judged_complete_without_reading_them(exports, tmp_path):
    m = e4.load_manifest(exports["delta"])
    assert all(e4.layer_file_is_complete(exports["delta"] / f) for f in [m["static"], *m["frame_files"]])
    good = (exports["delta"] / m["frame_files"][1]).read_bytes()
    assert len(good) % 32  # a .splat size test would call this delta broken
    assert good[:4] == b"SWD3"
    swd1 = e4.encode_swd1(np.array([1, 4]), np.zeros((2, 32), np.uint8), 40)
    rng = np.random.default_rng(1)
    prev = rng.integers(0, 256, size=(40, 32), dtype=np.uint8)
    cur = prev.copy()
    cur[[2, 5], 0] ^= 1
    cur[[7], 13] ^= 1
    swd2 = e4.Delta.between(prev, cur, b"SWD2").encode(b"SWD2")
    assert len(swd2) == 16 + 36 + 2 * 20
    for name, data in {"old.swd": swd1, "old2.swd": swd2}.items():
        (tmp_path / name).write_bytes(data)
        assert e4.layer_file_is_complete(tmp_path / name), name
    for name, data in {"cut.swd": good[:-1], "long.swd": good + b"\0", "magic.swd": b"SWDX" + good[4:],
                       "head.swd": good[:18], "odd.splat": b"\0" * 33, "empty.splat": b"",
                       "swd1cut.swd": swd1[:-1], "swd1head.swd": swd1[:10],
                       "swd2cut.swd": swd2[:-1], "swd2long.swd": swd2 + b"\0", "swd2head.swd": swd2[:14]}.items():
        (tmp_path / name).write_bytes(data)
        assert not e4.layer_file_is_complete(tmp_path / name), name
    assert not e4.layer_file_is_complete(tmp_path / "absent.swd")


def test_delta_sizes_benchmark_counts_what_the_export_writes(exports):
    """benchmarks/delta_sizes.py counts the three record kinds straight from the training folder: the same sizes
    and counts as the export's manifest (SWD3), and SWD2's and SWD1's sizes under their own keys."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "delta_sizes", Path(__file__).resolve().parents[1] / "benchmarks" / "delta_sizes.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.delta_sizes(exports["run"])
    m = e4.load_manifest(exports["delta"])
    assert out["format"] == "SWD3" and out["bytes"] == m["bytes"]["per_frame"]
    assert out["full_rows"] == m["records"]["full"] and out["motion_rows"] == m["records"]["motion"]
    assert out["motion_rgba_rows"] == m["records"]["motion_rgba"]
    assert out["motion_rows"][1:] == [len(MOTION_IDS)] * (N_FRAMES - 1)
    assert out["motion_rgba_rows"][1:] == [len(RGBA_IDS)] * (N_FRAMES - 1)
    changed = out["changed_rows"]
    assert out["swd1"]["bytes"] == [32 * len(DYN_IDS)] + [12 + 36 * n for n in changed[1:]]
    # SWD2 stores the motion+rgba rows whole: 12 bytes more each, 4 fewer header bytes.
    q = out["motion_rgba_rows"]
    assert out["swd2"]["bytes"] == [32 * len(DYN_IDS)] + [b + 12 * q[i] - 4 for i, b in enumerate(out["bytes"])
                                                          if i > 0]
    assert out["bytes_mean_after_first"] < out["swd2"]["bytes_mean_after_first"] < out["swd1"][
        "bytes_mean_after_first"]
