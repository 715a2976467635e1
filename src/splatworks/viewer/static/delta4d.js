// Delta-encoded 4D sequences (manifest "encoding": "delta", schema splatworks.4d/2; format in docs/viewer.md and
// splatworks/dynamic/export4d.py): frame 0's dynamic layer is a .splat (M records of 32 bytes, one row per
// Gaussian), and each later frame a delta holding only the rows whose record changed since the frame before:
// SWD3 (written now) has full 32-byte records, 16-byte motion records (position bytes 0-11 and rotation bytes
// 28-31 of a row, the rest unchanged) and 20-byte motion+rgba records (position, RGBA bytes 24-27 and rotation;
// the scale bytes 12-23 unchanged); SWD2 (older exports, still played) only the first two kinds, SWD1 only full
// records. DeltaLayers keeps frame 0's bytes and every delta (small), and materialises frame i's layer in memory:
// frame 0's bytes with deltas 1..i applied in order. Pure data handling: no three.js, no Spark.

export const RECORD_BYTES = 32;
export const MOTION_BYTES = 16;       // position 12 + rotation 4
export const MOTION_RGBA_BYTES = 20;  // position 12 + RGBA 4 + rotation 4
export const DELTA_FORMATS = ["SWD1", "SWD2", "SWD3"];  // the manifest's delta_format values this viewer plays
const KIND_BYTES = { full: RECORD_BYTES, motion: MOTION_BYTES, motionRgba: MOTION_RGBA_BYTES };  // per record
const KIND_NAMES = { full: "full", motion: "motion", motionRgba: "motion+rgba" };  // in messages
// Per format: header bytes ("SWDn", one uint32 count per record kind, uint32 M) and its record kinds in file
// order (which is also the order they are applied in).
const FORMATS = {
  SWD3: { header: 20, kinds: ["full", "motion", "motionRgba"] },
  SWD2: { header: 16, kinds: ["full", "motion"] },
  SWD1: { header: 12, kinds: ["full"] },
};

export async function fetchBytes(url, what) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${what}: server answered ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Parse and check a delta against a layer of `m` rows, little-endian: SWD3 = "SWD3", uint32 F, uint32 P,
 *  uint32 Q, uint32 M, F uint32 rows strictly ascending, F records of 32 bytes, P uint32 rows strictly ascending,
 *  P motion records of 16 bytes, Q uint32 rows strictly ascending, Q motion+rgba records of 20 bytes (no row in two
 *  lists); SWD2 = "SWD2", uint32 F, uint32 P, uint32 M, then as SWD3 without the Q kind; SWD1 = "SWD1", uint32 N,
 *  uint32 M, N rows, N records. Returns {format, fullRows: Uint32Array(F), fullRecords: Uint8Array(32 F),
 *  motionRows: Uint32Array(P), motionRecords: Uint8Array(16 P), motionRgbaRows: Uint32Array(Q),
 *  motionRgbaRecords: Uint8Array(20 Q)} (empty arrays for the kinds a format lacks); throws an Error that names
 *  `what` and says what is wrong. */
export function parseDelta(bytes, m, what) {
  const fail = (why) => {
    throw new Error(`${what} is not a usable delta file (${why}); re-export the sequence (splatworks dynamic export)`);
  };
  if (bytes.length < 4) fail(`${bytes.length} bytes, shorter than its magic`);
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  const format = Object.hasOwn(FORMATS, magic) ? FORMATS[magic] : null;
  if (!format) fail(`it starts with ${JSON.stringify(magic)}, not SWD3, SWD2 or SWD1`);
  if (bytes.length < format.header) fail(`${bytes.length} bytes, shorter than its ${format.header}-byte header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const counts = format.kinds.map((_, j) => view.getUint32(4 + 4 * j, true));
  const rowsInFile = view.getUint32(format.header - 4, true);
  if (rowsInFile !== m) fail(`made for a layer of ${rowsInFile} rows, but frame 0's layer has ${m}`);
  let expected = format.header;
  format.kinds.forEach((kind, j) => { expected += counts[j] * (4 + KIND_BYTES[kind]); });
  if (bytes.length !== expected) {
    const named = format.kinds.map((kind, j) => `${counts[j]} ${KIND_NAMES[kind]}`);
    const records = named.length > 1 ? `${named.slice(0, -1).join(", ")} and ${named.at(-1)}` : named[0];
    fail(`${bytes.length} bytes where ${records} records take ${expected}: truncated or garbled`);
  }
  const readRows = (at, n, kind) => {
    const rows = new Uint32Array(n);
    for (let j = 0; j < n; j++) {
      rows[j] = view.getUint32(at + 4 * j, true);
      if (rows[j] >= m || (j > 0 && rows[j] <= rows[j - 1])) {
        fail(`${kind} row indices must be strictly ascending and below ${m}`);
      }
    }
    return rows;
  };
  const out = { format: magic };
  for (const kind of Object.keys(KIND_BYTES)) {  // kinds this format lacks: empty
    out[`${kind}Rows`] = new Uint32Array(0);
    out[`${kind}Records`] = new Uint8Array(0);
  }
  let at = format.header;
  format.kinds.forEach((kind, j) => {
    const n = counts[j], width = KIND_BYTES[kind];
    out[`${kind}Rows`] = readRows(at, n, KIND_NAMES[kind]);
    out[`${kind}Records`] = bytes.subarray(at + 4 * n, at + n * (4 + width));
    at += n * (4 + width);
  });
  const kinds = format.kinds;
  for (let x = 0; x < kinds.length; x++) {
    for (let y = x + 1; y < kinds.length; y++) {
      const a = out[`${kinds[x]}Rows`], b = out[`${kinds[y]}Rows`];
      for (let i = 0, j = 0; i < a.length && j < b.length;) {  // both ascending: one merge pass finds a shared row
        if (a[i] === b[j]) fail(`row ${a[i]} has both a ${KIND_NAMES[kinds[x]]} and a ${KIND_NAMES[kinds[y]]} record`);
        if (a[i] < b[j]) i++; else j++;
      }
    }
  }
  return out;
}

/** Patch `layer` (Uint8Array, 32 bytes per row) in place: the delta's full records replace their rows, then each
 *  motion record's 12 position bytes and 4 rotation bytes replace bytes 0-11 and 28-31 of its row, then each
 *  motion+rgba record's 12 position bytes and 8 RGBA and rotation bytes replace bytes 0-11 and 24-31 of its row. */
export function applyDelta(layer, { fullRows, fullRecords, motionRows, motionRecords, motionRgbaRows = [],
                                    motionRgbaRecords }) {
  for (let j = 0; j < fullRows.length; j++) {
    layer.set(fullRecords.subarray(j * RECORD_BYTES, (j + 1) * RECORD_BYTES), fullRows[j] * RECORD_BYTES);
  }
  for (let j = 0; j < motionRows.length; j++) {  // byte loops: no subarray objects for tens of thousands of rows
    const src = j * MOTION_BYTES, dst = motionRows[j] * RECORD_BYTES;
    for (let k = 0; k < 12; k++) layer[dst + k] = motionRecords[src + k];
    for (let k = 0; k < 4; k++) layer[dst + 28 + k] = motionRecords[src + 12 + k];
  }
  for (let j = 0; j < motionRgbaRows.length; j++) {
    const src = j * MOTION_RGBA_BYTES, dst = motionRgbaRows[j] * RECORD_BYTES;
    for (let k = 0; k < 12; k++) layer[dst + k] = motionRgbaRecords[src + k];
    for (let k = 0; k < 8; k++) layer[dst + 24 + k] = motionRgbaRecords[src + 12 + k];
  }
}

export class DeltaLayers {
  /** `count`: rows of the dynamic layer (the manifest's dynamic_count); `urlOf(i)`: URL of frame i's file;
   *  `labelOf(i)`: how messages name that file. */
  constructor(count, urlOf, labelOf) {
    this.count = count; this.urlOf = urlOf; this.labelOf = labelOf;
    this.base = null;             // promise of frame 0's bytes (kept, never modified)
    this.deltas = new Map();      // frame -> promise of a parsed delta (kept)
    this.cursor = null;           // {frame, bytes}: the last materialised frame
    this.queue = Promise.resolve();
    this.lastPatch = null;        // {from, to}: frames of the last materialisation (tests)
  }

  baseLayer() {
    if (!this.base) {
      const m = this.count, what = this.labelOf(0);
      const p = fetchBytes(this.urlOf(0), what).then((bytes) => {
        if (bytes.length !== m * RECORD_BYTES) {
          throw new Error(`${what} has ${bytes.length} bytes, but the manifest's dynamic_count ${m} needs ` +
                          `${m * RECORD_BYTES}; the export is damaged or was replaced: reload the page`);
        }
        return bytes;
      });
      p.catch(() => { if (this.base === p) this.base = null; });  // try again next time
      this.base = p;
    }
    return this.base;
  }

  delta(k) {
    let p = this.deltas.get(k);
    if (!p) {
      const what = this.labelOf(k);
      p = fetchBytes(this.urlOf(k), what).then((bytes) => parseDelta(bytes, this.count, what));
      p.catch(() => { if (this.deltas.get(k) === p) this.deltas.delete(k); });  // try again next time
      this.deltas.set(k, p);
    }
    return p;
  }

  /** Frame i's dynamic layer as .splat bytes, a fresh copy the caller may hand over. Materialisations run one
   *  at a time, since each patches the cursor: forward from it, or from frame 0's bytes when going back. */
  materialise(i) {
    const run = this.queue.then(() => this.patchTo(i));
    this.queue = run.catch(() => {});
    return run;
  }

  async patchTo(i) {
    const base = await this.baseLayer();
    const cur = this.cursor && this.cursor.frame <= i ? this.cursor : { frame: 0, bytes: base.slice() };
    const from = cur.frame, pending = [];
    for (let k = from + 1; k <= i; k++) {  // fetch the missing deltas together, apply them in order
      const p = this.delta(k);
      p.catch(() => {});  // a failure is handled below, in order
      pending.push(p);
    }
    try {
      for (const p of pending) {
        applyDelta(cur.bytes, await p);  // parsed and checked before any byte is patched
        cur.frame += 1;
      }
    } finally {
      this.cursor = cur;  // always a whole frame: a failed delta leaves it at the frame before
    }
    this.lastPatch = { from, to: i };
    return cur.bytes.slice();
  }
}
