"""The 4D export's delta encoding (issue 7: a static layer once, then per frame only what changed).

A small training folder is written directly in the trainer's layout (``dynamic/sequence_io.py``: ``static.pt``,
``frames/NNNNNN.pt`` with ids and raw parameters, ``state.json``): a few Gaussians move every frame, one moves by
one float32 step, one changes below the .splat quantisation, one changes only its higher SH bands, one is pruned
at frame 2, the rest stay bit-identical. The delta export must hold exactly the changed rows, and every frame must
read back as the full-layer (``.splat``) export of the same frame shows it.
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
    assert m["schema"] == "splatworks.4d/2" and m["encoding"] == "delta" and m["delta_format"] == "SWD1"
    assert m["dynamic_count"] == len(DYN_IDS) and m["frames"] == m["frames_ready"] == N_FRAMES
    assert m["fps"] == 12.0 and m["frame_numbers"] == [10, 12, 14, 16, 18] and m["static"] == "static.splat"
    assert m["frame_files"] == m["frame_urls"] == ["frames/000000.splat"] + [f"frames/{i:06d}.swd"
                                                                              for i in range(1, N_FRAMES)]
    sizes = [(exports["delta"] / f).stat().st_size for f in m["frame_files"]]
    assert m["bytes"]["per_frame"] == sizes
    assert sizes[0] == 32 * len(DYN_IDS)
    # Changed rows only: the 5 movers and the one-ulp row every frame, the pruned row once (at frame 2).
    changed = [len(MOVING) + 1 + (i == PRUNED_AT) for i in range(1, N_FRAMES)]
    assert sizes[1:] == [12 + 36 * n for n in changed]
    assert m["bytes"]["per_frame_mean_after_first"] == pytest.approx(np.mean(sizes[1:]))
    assert m["bytes"]["total"] == m["bytes"]["static"] + sum(sizes) and m["bytes"]["per_frame_max"] == sizes[0]
    # The rows named in each delta are exactly the changed Gaussians' positions in frame 0's (id-ordered) layer.
    row = {int(g): r for r, g in enumerate(DYN_IDS)}
    for i in range(1, N_FRAMES):
        rows, records = e4.decode_delta((exports["delta"] / m["frame_files"][i]).read_bytes(), len(DYN_IDS))
        expect = sorted([row[int(g)] for g in MOVING] + [row[int(ONE_ULP)]] + ([row[int(PRUNED)]] if i == PRUNED_AT
                                                                                else []))
        assert rows.tolist() == expect and records.shape == (len(expect), 32)
    full = e4.load_manifest(exports["full"])
    assert full["schema"] == "splatworks.4d/1" and "encoding" not in full
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
    assert e4.load_frame_layers(bad, 1)["means"].shape[0] == len(STATIC_IDS) + len(DYN_IDS)
    cases = {
        "truncated": good[:-5],
        "not a SWD1": b"XXXX" + good[4:],
        "another run": good[:8] + (len(DYN_IDS) + 1).to_bytes(4, "little") + good[12:],
        "strictly ascending": good[:12] + good[16:20] + good[12:16] + good[20:],
        "too short": good[:7],
    }
    for words, data in cases.items():
        f2.write_bytes(data)
        with pytest.raises(InputError, match=words) as err:
            e4.load_frame_layers(bad, 3)
        assert "000002.swd" in str(err.value)
        assert e4.load_frame_layers(bad, 1)["means"].shape[0] > 0  # earlier frames still read
    f2.unlink()
    with pytest.raises(InputError, match="missing"):
        e4.load_frame_layers(bad, 2)


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
    data = e4.encode_delta(np.array([3, 500]), b[[3, 500]], 1000)
    rows, recs = e4.decode_delta(data, 1000)
    assert rows.tolist() == [3, 500] and np.array_equal(recs, b[[3, 500]]) and data[:4] == b"SWD1"
    layer = e4.hidden_records(a[:2])
    assert not layer[:, 12:24].any() and not layer[:, 27].any() and np.array_equal(layer[:, :12], a[:2, :12])
    assert len(data) == 12 + 2 * 36


def test_layer_files_judged_complete_without_reading_them(exports, tmp_path):
    m = e4.load_manifest(exports["delta"])
    assert all(e4.layer_file_is_complete(exports["delta"] / f) for f in [m["static"], *m["frame_files"]])
    good = (exports["delta"] / m["frame_files"][1]).read_bytes()
    assert len(good) % 32  # a .splat size test would call this delta broken
    for name, data in {"cut.swd": good[:-1], "long.swd": good + b"\0", "magic.swd": b"SWDX" + good[4:],
                       "head.swd": good[:10], "odd.splat": b"\0" * 33, "empty.splat": b""}.items():
        (tmp_path / name).write_bytes(data)
        assert not e4.layer_file_is_complete(tmp_path / name), name
    assert not e4.layer_file_is_complete(tmp_path / "absent.swd")
