"""4D export for the web viewer: a static layer written once, frame 0's dynamic layer, then per frame only the
rows that changed (``delta`` encoding, the default) or every frame's whole dynamic layer (``full``).

Layout (every ``.splat`` is antimatter15's format, 32 bytes per Gaussian, see ``splat/io.py``)::

    EXPORT/manifest.json
    EXPORT/static.splat              Gaussians that never change (the frozen static layer)
    EXPORT/frames/000000.splat       frame 0's dynamic layer: M records, one row per Gaussian, ascending id order
    EXPORT/frames/000001.swd         delta encoding: the rows of frame 1 whose record differs from frame 0's, ...

Delta file ``frames/NNNNNN.swd`` of frame index i > 0 (binary, little-endian, 4-byte aligned), format SWD3
(written now)::

    bytes 0-3    magic b"SWD3"
    bytes 4-7    uint32 F   full records in this delta
    bytes 8-11   uint32 P   motion records in this delta
    bytes 12-15  uint32 Q   motion+rgba records in this delta
    bytes 16-19  uint32 M   rows of the dynamic layer (sanity check against frame 0's layer)
    then F uint32 row indices, strictly ascending, each < M (positions in frame 0's layer)
    then F 32-byte .splat records that replace those rows
    then P uint32 row indices, strictly ascending, each < M
    then P 16-byte motion records: position (3 x float32, the record's bytes 0-11) then rotation (4 x uint8, its
         bytes 28-31); each replaces only those 16 bytes of its row (scale and colour bytes 12-27 stay)
    then Q uint32 row indices, strictly ascending, each < M
    then Q 20-byte motion+rgba records: position (bytes 0-11), RGBA (4 x uint8, bytes 24-27: r, g, b, alpha),
         rotation (bytes 28-31); each replaces those 20 bytes of its row (the scale bytes 12-23 stay)
    (the three row lists are disjoint)

    size = 20 + 36 F + 20 P + 24 Q bytes

Older formats, still read (by this module and the viewer); ``export_4d`` into the same folder rewrites them as SWD3::

    SWD2: magic b"SWD2"; uint32 F; uint32 P; uint32 M; then the F full and P motion records as in SWD3 (no Q kind);
          size 16 + 36 F + 20 P
    SWD1: magic b"SWD1"; uint32 N; uint32 M; then N uint32 rows (ascending, < M); then N x 32 bytes (full only)

Frame i's dynamic layer = frame 0's layer with the deltas 1..i applied in order (in each delta: full records, then
motion records, then motion+rgba records). A row is in frame i's delta iff its encoded 32-byte record at frame i
differs from its record at frame i - 1 (byte comparison: the .splat quantisation decides, no tolerance); it goes
into the smallest kind that reproduces its new record exactly: a motion record when only its position and/or
rotation bytes differ, a motion+rgba record when its scale bytes 12-23 are unchanged (colour or opacity changed
too), a full record otherwise. Sequential training changes only centres, rotations and, by default
(``frame_params=motion+opacity``), opacities after frame 0, so a Gaussian that moves costs 20 bytes a frame, 24
when it also fades, instead of 36. Training keeps the Gaussians away from the moving people bit-for-bit, so they
cost nothing after frame 0. A Gaussian pruned
at frame i (its id is missing from frame i's ``.pt``) is written once as a full record that draws nothing (scales
0, opacity byte 0, position, colour and rotation kept) and stays so. Training never adds Gaussians after frame 0:
an id that frame 0 lacks is an error.

``manifest.json`` (read by the viewer's SequencePlayer, docs/viewer.md)::

    {"schema": "splatworks.4d/2", "encoding": "delta", "delta_format": "SWD3", "format": "splat",
     "fps": 30.0, "frames": 150, "frames_ready": 150, "static": "static.splat", "dynamic_count": M,
     "frame_files": ["frames/000000.splat", "frames/000001.swd", ...], "frame_urls": (same list),
     "frame_numbers": [dataset frame numbers],
     "records": {"full": [M, F of frame 1, ...], "motion": [0, P of frame 1, ...],
                 "motion_rgba": [0, Q of frame 1, ...]},   (delta encoding only; SWD3's record kinds)
     "bytes": {"static": ..., "per_frame": [file size of each frame], "per_frame_mean": ...,
               "per_frame_mean_after_first": ..., "per_frame_max": ..., "total": ...},
     "coordinates": "..."}

The ``full`` encoding writes ``"schema": "splatworks.4d/1"`` without ``encoding`` (the manifests of earlier
exports, still readable): every frame is a ``frames/NNNNNN.splat`` of its whole dynamic layer (sorted by size like
any .splat), plus ``frame_pattern = "frames/{frame}.splat"`` and ``frame_digits = 6``.

Paths are relative to the manifest. ``frames`` is the length of the sequence, ``frames_ready`` how many layers
exist now (an export of a run still training grows; the viewer polls until they are equal). Coordinates are the
dataset's world frame with OpenCV cameras; the viewer converts to three.js axes.
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit

MANIFEST = "manifest.json"
SCHEMA_DELTA = "splatworks.4d/2"
SCHEMA_FULL = "splatworks.4d/1"
ENCODINGS = ("delta", "full")
DELTA_MAGIC = b"SWD3"  # the delta format written now
SWD2_MAGIC = b"SWD2"   # older exports' deltas: full and motion records (still read)
SWD1_MAGIC = b"SWD1"   # older exports' deltas: full records only (still read)
SWD3_HEADER = struct.Struct("<4sIIII")  # magic, F full, P motion, Q motion+rgba records, M rows
SWD2_HEADER = struct.Struct("<4sIII")   # magic, F full records, P motion records, M rows
SWD1_HEADER = struct.Struct("<4sII")    # magic, N records, M rows
RECORD_BYTES = 32
MOTION_BYTES = 16       # position + rotation
MOTION_RGBA_BYTES = 20  # position + RGBA + rotation
# Byte ranges of one .splat record (splat/io.py SPLAT_DTYPE): float32 position xyz, float32 scale xyz, RGBA, rot.
POSITION_BYTES = slice(0, 12)
SCALE_BYTES = slice(12, 24)
RGBA_BYTES = slice(24, 28)
ALPHA_BYTE = 27
ROTATION_BYTES = slice(28, 32)
RGBA_ROTATION_BYTES = slice(24, 32)  # contiguous: what a motion+rgba record holds after the position
SCALE_WORDS = slice(3, 6)  # uint32 words 3..5 = bytes 12-23: what a motion+rgba record leaves alone
RGBA_WORD = 6              # uint32 word 6 = bytes 24-27
RECORD_PARAMS = ("means", "quats", "scales", "opacities", "sh0")  # what a .splat record is made of (not shN)
LAYER_FILE_RE = re.compile(r"^\d{6}\.(splat|swd)$")
COORDINATES = "world frame of the dataset; OpenCV cameras (x right, y down, z forward); .splat records"


@dataclass(frozen=True)
class DeltaFormat:
    """One .swd format: its magic, header (magic, record counts per kind, M) and the record kinds it stores."""

    magic: bytes
    header: struct.Struct
    kinds: tuple[str, ...]  # of "full", "motion", "motion_rgba", in file (and apply) order


KIND_BYTES = {"full": RECORD_BYTES, "motion": MOTION_BYTES, "motion_rgba": MOTION_RGBA_BYTES}  # per record, no row
FORMATS = {f.magic: f for f in (DeltaFormat(DELTA_MAGIC, SWD3_HEADER, ("full", "motion", "motion_rgba")),
                                DeltaFormat(SWD2_MAGIC, SWD2_HEADER, ("full", "motion")),
                                DeltaFormat(SWD1_MAGIC, SWD1_HEADER, ("full",)))}


def frame_name(index: int, encoding: str = "full") -> str:
    """File of frame ``index`` relative to the export: a .splat, or (delta encoding, index > 0) a .swd delta."""
    return f"frames/{index:06d}.{'swd' if encoding == 'delta' and index > 0 else 'splat'}"


# ---- records and deltas ------------------------------------------------------------------------------------------
def splat_records(params: dict[str, torch.Tensor]) -> np.ndarray:
    """(N, 32) uint8: the .splat record of each Gaussian, in the rows' own order (not sorted by size).

    The bytes are exactly those ``splat.io.write_splat`` writes for the same Gaussian (its encoder, then its
    size ordering undone), so the viewer shows what a .splat export would.
    """
    from splatworks.splat.io import params_to_splat, splat_order

    sorted_rec = params_to_splat(params)
    order = splat_order(params["scales"].detach().float().cpu().numpy(),
                        params["opacities"].detach().float().cpu().numpy())
    rec = np.empty_like(sorted_rec)
    rec[order] = sorted_rec
    return rec.view(np.uint8).reshape(-1, RECORD_BYTES)


def hidden_records(records: np.ndarray) -> np.ndarray:
    """(N, 32) uint8 copies of ``records`` that draw nothing: scales 0.0 and opacity byte 0 (the rest kept)."""
    out = records.copy()
    out[:, SCALE_BYTES] = 0
    out[:, ALPHA_BYTE] = 0
    return out


def changed_rows(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(N,) int64 ascending indices of the rows whose 32 bytes differ between two (M, 32) uint8 layers."""
    a = np.ascontiguousarray(prev).view("<u8")  # (M, 4): four 8-byte words per record
    b = np.ascontiguousarray(cur).view("<u8")
    return np.flatnonzero((a != b).any(axis=1))


def motion_records(records: np.ndarray) -> np.ndarray:
    """(N, 16) uint8 motion records of (N, 32) .splat records: position bytes 0-11, then rotation bytes 28-31."""
    return np.concatenate([records[:, POSITION_BYTES], records[:, ROTATION_BYTES]], axis=1)


def motion_rgba_records(records: np.ndarray) -> np.ndarray:
    """(N, 20) uint8 motion+rgba records of (N, 32) .splat records: position bytes 0-11, then RGBA and rotation
    bytes 24-31."""
    return np.concatenate([records[:, POSITION_BYTES], records[:, RGBA_ROTATION_BYTES]], axis=1)


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _no_records(width: int) -> Callable[[], np.ndarray]:
    return lambda: np.zeros((0, width), dtype=np.uint8)


@dataclass(frozen=True)
class Delta:
    """One frame's delta against the frame before, over a dynamic layer of ``m`` rows.

    ``full_rows`` (F,), ``motion_rows`` (P,) and ``motion_rgba_rows`` (Q,) are int64, each strictly ascending,
    pairwise disjoint, < m; ``full_records`` (F, 32) uint8 replace whole rows; ``motion_records`` (P, 16) uint8
    replace only the position (record bytes 0-11) and rotation (bytes 28-31) of theirs; ``motion_rgba_records``
    (Q, 20) uint8 the position, RGBA (bytes 24-27) and rotation of theirs. A SWD2 file decodes with no motion+rgba
    records, a SWD1 file with full records only.
    """

    m: int
    full_rows: np.ndarray
    full_records: np.ndarray
    motion_rows: np.ndarray = field(default_factory=_no_rows)
    motion_records: np.ndarray = field(default_factory=_no_records(MOTION_BYTES))
    motion_rgba_rows: np.ndarray = field(default_factory=_no_rows)
    motion_rgba_records: np.ndarray = field(default_factory=_no_records(MOTION_RGBA_BYTES))

    @classmethod
    def between(cls, prev: np.ndarray, cur: np.ndarray, fmt: bytes = DELTA_MAGIC) -> Delta:
        """The delta that turns (M, 32) uint8 layer ``prev`` into ``cur``, each changed row in the smallest kind of
        format ``fmt`` that reproduces it: motion when its bytes 12-27 (scale, RGBA) are equal, motion+rgba (SWD3)
        when its scale bytes 12-23 are, full otherwise. ``fmt`` b"SWD2" gives the older encoder's choice."""
        kinds = FORMATS[fmt].kinds
        rows = changed_rows(prev, cur)
        a = np.ascontiguousarray(prev[rows]).view("<u4")  # (N, 8) words
        b = np.ascontiguousarray(cur[rows]).view("<u4")
        same_scale = (a[:, SCALE_WORDS] == b[:, SCALE_WORDS]).all(axis=1)
        same_rgba = a[:, RGBA_WORD] == b[:, RGBA_WORD]
        motion = same_scale & same_rgba if "motion" in kinds else np.zeros(len(rows), dtype=bool)
        rgba = same_scale & ~motion if "motion_rgba" in kinds else np.zeros(len(rows), dtype=bool)
        full = ~(motion | rgba)
        return cls(len(cur), rows[full], cur[rows[full]], rows[motion], motion_records(cur[rows[motion]]),
                   rows[rgba], motion_rgba_records(cur[rows[rgba]]))

    @property
    def rows(self) -> int:
        """Rows this delta changes (records of every kind)."""
        return len(self.full_rows) + len(self.motion_rows) + len(self.motion_rgba_rows)

    def counts(self) -> dict[str, int]:
        """Records per kind: {"full": F, "motion": P, "motion_rgba": Q}."""
        return {k: len(self._rows(k)) for k in KIND_BYTES}

    def _rows(self, kind: str) -> np.ndarray:
        return {"full": self.full_rows, "motion": self.motion_rows, "motion_rgba": self.motion_rgba_rows}[kind]

    def _records(self, kind: str) -> np.ndarray:
        return {"full": self.full_records, "motion": self.motion_records,
                "motion_rgba": self.motion_rgba_records}[kind]

    def encode(self, fmt: bytes = DELTA_MAGIC) -> bytes:
        """The .swd file in format ``fmt`` (SWD3 unless asked otherwise): header, then per kind its rows (uint32)
        and records. An older format cannot hold the kinds it lacks: ValueError if this delta has any."""
        f = FORMATS[fmt]
        missing = [k for k in KIND_BYTES if k not in f.kinds and len(self._rows(k))]
        if missing:
            raise ValueError(f"a {fmt.decode()} delta cannot hold {', '.join(missing)} records; build the delta "
                             f"with Delta.between(..., fmt={fmt!r})")
        parts = [f.header.pack(fmt, *(len(self._rows(k)) for k in f.kinds), self.m)]
        for k in f.kinds:
            parts.append(np.asarray(self._rows(k), dtype="<u4").tobytes())
            parts.append(np.ascontiguousarray(self._records(k), dtype=np.uint8).tobytes())
        return b"".join(parts)

    def apply(self, layer: np.ndarray) -> None:
        """Patch (m, 32) uint8 ``layer`` in place: the full records, then the motion records' 16 bytes, then the
        motion+rgba records' 20 bytes."""
        layer[self.full_rows] = self.full_records
        layer[self.motion_rows, POSITION_BYTES] = self.motion_records[:, :12]
        layer[self.motion_rows, ROTATION_BYTES] = self.motion_records[:, 12:]
        layer[self.motion_rgba_rows, POSITION_BYTES] = self.motion_rgba_records[:, :12]
        layer[self.motion_rgba_rows, RGBA_ROTATION_BYTES] = self.motion_rgba_records[:, 12:]


def swd3_size(full: int, motion: int, motion_rgba: int) -> int:
    """Bytes of a SWD3 delta with ``full`` full, ``motion`` motion and ``motion_rgba`` motion+rgba records."""
    return _format_size(FORMATS[DELTA_MAGIC], (full, motion, motion_rgba))


def swd2_size(full: int, motion: int) -> int:
    """Bytes of a SWD2 delta with ``full`` full records and ``motion`` motion records."""
    return _format_size(FORMATS[SWD2_MAGIC], (full, motion))


def _format_size(f: DeltaFormat, counts: tuple[int, ...]) -> int:
    return f.header.size + sum(n * (4 + KIND_BYTES[k]) for k, n in zip(f.kinds, counts))


def encode_swd1(rows: np.ndarray, records: np.ndarray, m: int) -> bytes:
    """A SWD1 delta (the format before SWD2, full records only): header, ``rows`` (N,) as uint32, then ``records``
    (N, 32) uint8. Kept to test that older exports still read and play."""
    return Delta(m, np.asarray(rows, dtype=np.int64), records).encode(SWD1_MAGIC)


def decode_delta(data: bytes, m: int, source: str = "delta") -> Delta:
    """The :class:`Delta` of a .swd file (SWD3, or SWD2/SWD1 of older exports), checked against a layer of ``m``
    rows.

    Raises InputError naming ``source`` when the file is too short, truncated, garbled (unknown magic, rows not
    strictly ascending, out of range, or a row in two lists) or belongs to another export; nothing is applied.
    """
    again = "re-run `splatworks dynamic export` to rewrite the 4D export"
    if len(data) < 4:
        raise InputError(f"{source}: {len(data)} bytes is too short for a delta file; {again}")
    fmt = FORMATS.get(bytes(data[:4]))
    if fmt is None:
        raise InputError(f"{source}: not a SWD3, SWD2 or SWD1 delta file (starts with {bytes(data[:4])!r}); "
                         f"{again}")
    name = fmt.magic.decode("ascii")
    if len(data) < fmt.header.size:
        raise InputError(f"{source}: {len(data)} bytes is too short for a {name} delta (header is "
                         f"{fmt.header.size} bytes); {again}")
    _, *counts, m_file = fmt.header.unpack_from(data)
    if m_file != m:
        raise InputError(f"{source}: made for a dynamic layer of {m_file} rows but frame 0's layer has {m}; the "
                         f"export is from another run or half rewritten; {again}")
    expected = _format_size(fmt, counts)
    if len(data) != expected:
        named = [f"{n} {k.replace('_', '+')}" for k, n in zip(fmt.kinds, counts)]
        what = (f"{counts[0]} records" if len(named) == 1  # SWD1: one kind, unnamed
                else ", ".join(named[:-1]) + f" and {named[-1]} records")
        raise InputError(f"{source}: {len(data)} bytes, but a {name} delta of {what} has {expected}: truncated or "
                         f"garbled; {again}")
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    at = fmt.header.size
    for kind, n in zip(fmt.kinds, counts):
        width = KIND_BYTES[kind]
        rows = np.frombuffer(data, dtype="<u4", count=n, offset=at).astype(np.int64)
        records = np.frombuffer(data, dtype=np.uint8, count=n * width, offset=at + 4 * n).reshape(n, width)
        if len(rows) and (rows[-1] >= m or (np.diff(rows) <= 0).any()):
            raise InputError(f"{source}: {kind.replace('_', '+')} row indices must be strictly ascending and below "
                             f"{m}; garbled; {again}")
        parts[kind] = (rows, records)
        at += n * (4 + width)
    kinds = list(parts)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            both = np.intersect1d(parts[a][0], parts[b][0], assume_unique=True)
            if len(both):
                raise InputError(f"{source}: row {int(both[0])} has both a {a.replace('_', '+')} and a "
                                 f"{b.replace('_', '+')} record (overlap); garbled; {again}")
    return Delta(m, *(x for k in kinds for x in parts[k]))


class DeltaEncoder:
    """Frame-to-frame state of the delta encoding: frame 0's ids (the row order), the previous frame's records.

    Only rows whose raw values (the parts a .splat record is made of) changed bit-wise are encoded again, so a frame
    costs about as much as reading its file; the byte comparison of the records then decides the delta.
    """

    def __init__(self, ids: np.ndarray, params: dict[str, torch.Tensor], what: str) -> None:
        """``ids`` (M,) and raw ``params`` of frame 0's dynamic layer; ``what`` names that frame in messages."""
        self.first = what
        order = _id_order(ids)
        self.ids = ids if order is None else ids[order]  # (M,) ascending
        if len(self.ids) > 1 and (np.diff(self.ids) == 0).any():
            raise UserError(f"{what} lists a Gaussian id twice; re-train the run")
        records = splat_records(_record_params(params))
        self.records = records if order is None else records[order]  # (M, 32) uint8
        self.raw = {k: (v if order is None else v[order]).view(np.uint32).copy()  # (M, C) bits
                    for k, v in _raw_values(params).items()}
        self.present = np.ones(len(self.ids), dtype=bool)

    def next_frame(self, ids: np.ndarray, params: dict[str, torch.Tensor], what: str) -> Delta:
        """The next frame's delta (records of every SWD3 kind); advances to that frame."""
        order = _id_order(ids)
        if order is not None:
            ids = ids[order]
        m = len(self.ids)
        pos: np.ndarray | slice
        if len(ids) == m and np.array_equal(ids, self.ids):  # the usual case, nothing pruned: plain slices
            pos = slice(None)
        else:
            pos = np.searchsorted(self.ids, ids)
            unknown = np.ones(len(ids), dtype=bool) if m == 0 else \
                (pos >= m) | (self.ids[np.minimum(pos, m - 1)] != ids)
            if unknown.any():
                raise UserError(f"{what} has {int(unknown.sum())} Gaussians that {self.first} does not (e.g. id "
                                f"{int(ids[unknown][0])}); the delta export needs a fixed set of Gaussians after "
                                "frame 0 (no densification); export it with encoding 'full'")
        values = _raw_values(params)
        if order is not None:
            values = {k: v[order] for k, v in values.items()}
        stale = ~self.present[pos]  # rows pruned before (drawing nothing) that are back
        for k, v in values.items():
            bits = v.view(np.uint32)
            stale |= (bits != self.raw[k][pos]).any(axis=1)
            self.raw[k][pos] = bits
        present = np.zeros(m, dtype=bool)
        present[pos] = True
        cur = self.records.copy()
        gone = self.present & ~present  # pruned at this frame: written once as a record that draws nothing
        cur[gone] = hidden_records(cur[gone])
        if stale.any():
            which = np.flatnonzero(stale)  # numpy gathers: much cheaper than torch indexing on a busy CPU
            shapes = {k: tuple(params[k].shape[1:]) for k in RECORD_PARAMS}
            sub = {k: torch.from_numpy(v[which].reshape((-1,) + shapes[k])) for k, v in values.items()}
            cur[which if isinstance(pos, slice) else pos[which]] = splat_records(sub)
        delta = Delta.between(self.records, cur)
        self.records, self.present = cur, present
        return delta


def _id_order(ids: np.ndarray) -> np.ndarray | None:
    """Permutation that sorts ``ids``, or None when they are ascending already (the trainer's files are)."""
    return None if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()) else np.argsort(ids, kind="stable")


def _record_params(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: params[k] for k in RECORD_PARAMS}


def _raw_values(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per raw parameter a .splat record is made of: (N, C) float32 (bit-equal values give equal records)."""
    n = len(params["means"])
    return {k: np.ascontiguousarray(params[k].detach().to("cpu", torch.float32).reshape(n, -1).numpy())
            for k in RECORD_PARAMS}


# ---- export --------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> int:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def export_4d(train_dir: str | Path, out_dir: str | Path, progress: ProgressFn | None = None,
              encoding: str = "delta") -> dict[str, Any]:
    """Write the static layer, the frames' dynamic layers (or deltas) and ``manifest.json``; returns the manifest.

    The static layer is the frozen layer of training (``freeze_static``, the default). A run trained without it
    has no static layer: frame 0's layer then holds all of its Gaussians (the manifest's ``static`` is null).
    Every export rewrites all layers (each file atomically, the manifest last), so re-running it while training
    goes on just adds the new frames; files of an earlier export that the new manifest does not list are removed.
    An earlier export's SWD1 or SWD2 deltas in ``out_dir`` are rewritten as SWD3.
    """
    from splatworks.dynamic import sequential as seq
    from splatworks.dynamic.render import SOURCE_FILE
    from splatworks.splat.io import write_splat

    if encoding not in ENCODINGS:
        raise UserError(f"unknown 4D export encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    train_dir, out = Path(train_dir), Path(out_dir)
    frames = seq.trained_frames(train_dir)
    if not frames:
        raise UserError(f"{train_dir} has no trained frames; run `splatworks dynamic train DATASET -o {train_dir}`")
    state = json.loads((train_dir / seq.STATE_FILE).read_text())
    source = json.loads((train_dir / SOURCE_FILE).read_text()) if (train_dir / SOURCE_FILE).exists() else {}
    (out / "frames").mkdir(parents=True, exist_ok=True)
    static_bytes = 0
    static_rel: str | None = None
    static_path = train_dir / seq.STATIC_FILE
    if static_path.exists():
        static = torch.load(static_path, map_location="cpu")
        if len(static["ids"]):
            write_splat(out / "static.splat", {k: static[k] for k in seq.PARAM_KEYS})
            static_bytes = (out / "static.splat").stat().st_size
            static_rel = "static.splat"

    per_frame: list[int] = []
    files: list[str] = []
    counts: dict[str, list[int]] = {k: [] for k in KIND_BYTES}  # per kind and frame: records (frame 0: M full)
    encoder: DeltaEncoder | None = None
    for i, f in enumerate(frames):
        dyn = torch.load(seq.frame_file(train_dir, f), map_location="cpu")
        params = {k: dyn[k] for k in seq.PARAM_KEYS}
        rel = frame_name(i, encoding)
        if encoding == "full":
            write_splat(out / rel, params)
            size = (out / rel).stat().st_size
            frame_counts = {"full": len(dyn["ids"]), "motion": 0, "motion_rgba": 0}
        else:
            ids = dyn["ids"].cpu().numpy().astype(np.int64)
            if encoder is None:  # frame 0: the whole layer, rows in ascending id order
                encoder = DeltaEncoder(ids, params, f"frame {f}")
                size = _atomic_write(out / rel, encoder.records.tobytes())
                frame_counts = {"full": len(ids), "motion": 0, "motion_rgba": 0}
            else:
                delta = encoder.next_frame(ids, params, f"frame {f} ({seq.frame_file(train_dir, f)})")
                size = _atomic_write(out / rel, delta.encode())
                frame_counts = delta.counts()
        per_frame.append(size)
        files.append(rel)
        for k, n in frame_counts.items():
            counts[k].append(n)
        emit(progress, "export4d", i + 1, len(frames),
             f"frame {f}: {size / 1e6:.3f} MB ({sum(frame_counts.values())} Gaussians: {frame_counts['full']} "
             f"full, {frame_counts['motion']} motion, {frame_counts['motion_rgba']} motion+rgba records)")

    total = int(state.get("frames_total", len(frames)))
    after_first = per_frame[1:]
    manifest: dict[str, Any] = {"schema": SCHEMA_DELTA if encoding == "delta" else SCHEMA_FULL}
    if encoding == "delta":
        manifest.update({"encoding": "delta", "delta_format": DELTA_MAGIC.decode("ascii"),
                         "dynamic_count": len(encoder.ids) if encoder is not None else 0,
                         "records": counts})
    manifest.update({
        "format": "splat",
        "fps": float(source.get("fps", 30.0)),
        "frames": total,
        "frames_ready": len(frames),
        "static": static_rel,
        "frame_files": files,
        "frame_urls": files,
    })
    if encoding == "full":
        manifest.update({"frame_pattern": "frames/{frame}.splat", "frame_digits": 6})
    manifest.update({
        "frame_numbers": frames,
        "bytes": {"static": static_bytes, "per_frame": per_frame,
                  "per_frame_mean": sum(per_frame) / len(per_frame),
                  "per_frame_mean_after_first": sum(after_first) / len(after_first) if after_first else None,
                  "per_frame_max": max(per_frame), "total": static_bytes + sum(per_frame)},
        "coordinates": COORDINATES,
    })
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    if static_rel is None:
        (out / "static.splat").unlink(missing_ok=True)
    listed = {Path(r).name for r in files}
    for stale in (out / "frames").iterdir():  # layers of an earlier export (other encoding, longer run)
        if LAYER_FILE_RE.match(stale.name) and stale.name not in listed:
            stale.unlink(missing_ok=True)
    return manifest


def layer_file_is_complete(path: str | Path) -> bool:
    """True when a layer file of an export is whole: a non-empty .splat of 32-byte records, or a .swd delta (SWD3,
    SWD2 or SWD1) whose size matches its header (for checks that must not read whole files, e.g. ``admin
    reimport``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.suffix != ".swd":
            return size > 0 and size % RECORD_BYTES == 0
        with open(path, "rb") as f:
            head = f.read(SWD3_HEADER.size)
    except OSError:
        return False
    fmt = FORMATS.get(head[:4])
    if fmt is None or len(head) < fmt.header.size:
        return False
    _, *counts, _ = fmt.header.unpack_from(head)
    return size == _format_size(fmt, counts)


# ---- reading an export back (what the viewer shows) ----------------------------------------------------------------
def load_manifest(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST
    if not path.exists():
        raise UserError(f"{export_dir} has no {MANIFEST}; run `splatworks dynamic export TRAIN_DIR -o {export_dir}`")
    return json.loads(path.read_text())


def dynamic_layer_records(export_dir: str | Path, index: int, manifest: dict[str, Any] | None = None) -> np.ndarray:
    """(M, 32) uint8 .splat records of frame ``index``'s dynamic layer, as the viewer materialises it.

    Delta encoding: frame 0's layer with the deltas 1..index applied in order; full: that frame's file.
    Raises InputError for a missing, truncated or garbled layer file.
    """
    export_dir = Path(export_dir)
    m = manifest or load_manifest(export_dir)
    files = m["frame_files"]
    if not 0 <= index < len(files):
        raise UserError(f"frame index {index} is not exported; {export_dir} has frames 0..{len(files) - 1}")

    def read(rel: str) -> bytes:
        path = export_dir / rel
        if not path.exists():
            raise InputError(f"{path} is missing; re-run `splatworks dynamic export`")
        return path.read_bytes()

    first = read(files[0] if m.get("encoding") == "delta" else files[index])
    if len(first) % RECORD_BYTES:
        raise InputError(f"{export_dir / files[0]}: size {len(first)} is not a multiple of 32 bytes; not a .splat")
    layer = np.frombuffer(first, dtype=np.uint8).reshape(-1, RECORD_BYTES).copy()
    if m.get("encoding") != "delta":
        return layer
    if "dynamic_count" in m and len(layer) != int(m["dynamic_count"]):
        raise InputError(f"{export_dir / files[0]} has {len(layer)} records but the manifest says dynamic_count = "
                         f"{m['dynamic_count']}; re-run `splatworks dynamic export`")
    for k in range(1, index + 1):
        decode_delta(read(files[k]), len(layer), str(export_dir / files[k])).apply(layer)
    return layer


def _decode_records(records: np.ndarray) -> dict[str, torch.Tensor]:
    """Raw parameters of (N, 32) .splat records, decoded by ``splat.io.read_splat`` itself."""
    from splatworks.splat.io import read_splat

    with tempfile.TemporaryDirectory(prefix="splatworks-4d-") as tmp:
        path = Path(tmp) / "layer.splat"
        path.write_bytes(np.ascontiguousarray(records).tobytes())
        return read_splat(path)


def load_frame_layers(export_dir: str | Path, index: int) -> dict[str, torch.Tensor]:
    """Raw parameters of frame ``index`` as the viewer shows it: static layer rows, then that frame's dynamic layer
    rows (delta encoding: frame 0's layer with deltas 1..index applied), at .splat precision.

    Pruned Gaussians of a delta export stay as rows that draw nothing (scales ~1e-12, zero opacity byte).
    """
    from splatworks.splat.io import read_splat

    m = load_manifest(export_dir)
    parts = [_decode_records(dynamic_layer_records(export_dir, index, m))]
    if m.get("static"):
        parts.insert(0, read_splat(Path(export_dir) / m["static"]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
