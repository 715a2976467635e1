// Delta-encoded 4D sequences (manifest "encoding": "delta", schema splatworks.4d/2; format in docs/viewer.md and
// splatworks/dynamic/export4d.py): frame 0's dynamic layer is a .splat (M records of 32 bytes, one row per
// Gaussian), and each later frame a SWD1 delta holding only the rows whose record changed since the frame before.
// DeltaLayers keeps frame 0's bytes and every delta (small), and materialises frame i's layer in memory: frame 0's
// bytes with deltas 1..i applied in order. Pure data handling: no three.js, no Spark.

export const RECORD_BYTES = 32;
const HEADER_BYTES = 12;
const MAGIC = "SWD1";

export async function fetchBytes(url, what) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${what}: server answered ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Parse and check a SWD1 delta (little-endian: "SWD1", uint32 N, uint32 M, N uint32 rows strictly ascending,
 *  N records) against a layer of `m` rows. Returns {rows: Uint32Array(N), records: Uint8Array(32 N)}; throws an
 *  Error that names `what` and says what is wrong. */
export function parseDelta(bytes, m, what) {
  const fail = (why) => {
    throw new Error(`${what} is not a usable SWD1 delta (${why}); re-export the sequence (splatworks dynamic export)`);
  };
  if (bytes.length < HEADER_BYTES) fail(`${bytes.length} bytes, shorter than its 12-byte header`);
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== MAGIC) fail(`it starts with ${JSON.stringify(magic)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getUint32(4, true), rowsInFile = view.getUint32(8, true);
  if (rowsInFile !== m) fail(`made for a layer of ${rowsInFile} rows, but frame 0's layer has ${m}`);
  const expected = HEADER_BYTES + n * (4 + RECORD_BYTES);
  if (bytes.length !== expected) {
    fail(`${bytes.length} bytes where ${n} records take ${expected}: truncated or garbled`);
  }
  const rows = new Uint32Array(n);
  for (let j = 0; j < n; j++) {
    rows[j] = view.getUint32(HEADER_BYTES + 4 * j, true);
    if (rows[j] >= m || (j > 0 && rows[j] <= rows[j - 1])) {
      fail(`row indices must be strictly ascending and below ${m}`);
    }
  }
  return { rows, records: bytes.subarray(HEADER_BYTES + 4 * n) };
}

/** Replace the delta's rows of `layer` (Uint8Array, 32 bytes per row) in place. */
export function applyDelta(layer, { rows, records }) {
  for (let j = 0; j < rows.length; j++) {
    layer.set(records.subarray(j * RECORD_BYTES, (j + 1) * RECORD_BYTES), rows[j] * RECORD_BYTES);
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
