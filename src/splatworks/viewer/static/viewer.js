// splatworks viewer: renders a job's Gaussian splats with Spark and follows the job while it trains.
//
// Data it reads (all from our server; contract in docs/viewer.md):
//   GET /recon/pub/{key}/info               status, stage, progress, files.{splat,ply}, start_camera, kind
//   GET /recon/pub/{key}/events             the same as server-sent `status` events (`deleted`, `end`)
//   GET files.splat | files.ply             the latest checkpoint (re-fetched with ?ckpt=<latest_checkpoint>)
//   GET /recon/pub/{key}/4d/manifest.json   4D sequences (kind == "dynamic"): static layer + per-frame layers
// Live updates: GET /recon/pub/{key}/events (server-sent events) while the job runs, polling /info otherwise.
// Query parameters: ?manifest=URL plays that 4D manifest; ?poll=MS polls /info every MS ms instead of events;
// ?quality=fast|balanced|best; ?timing=1 records when splats first show (benchmarks).
//
// Camera conventions: three.js (OpenGL axes, camera looks down -z); start_camera is converted server-side from
// the training camera (splatworks.viewer.camera) and the splat files keep the world frame of training.
//
// window.splatworks exposes the viewer state for tests and benchmarks (see docs/viewer.md).

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh, SplatFileType, dyno } from "@sparkjsdev/spark";
import { DELTA_FORMATS, DeltaLayers } from "./delta4d.js";

const params = new URLSearchParams(location.search);
const pathKey = location.pathname.match(/\/v\/([^/]+)\/?$/);
const KEY = pathKey ? decodeURIComponent(pathKey[1]) : params.get("key");
const API = KEY ? `/recon/pub/${encodeURIComponent(KEY)}` : null;
const POLL_MS = Math.max(200, Number(params.get("poll")) || 2000);
const FINISHED = new Set(["done", "finished", "completed", "succeeded", "success"]);
const FAILED = new Set(["failed", "error", "cancelled", "canceled"]);
const QUALITY = {  // pixel ratio and Gaussian extent (standard deviations) per quality level
  fast: { pixelRatio: 0.5, maxStdDev: Math.sqrt(5) },
  balanced: { pixelRatio: Math.min(window.devicePixelRatio || 1, 1), maxStdDev: Math.sqrt(8) },
  best: { pixelRatio: Math.min(window.devicePixelRatio || 1, 2), maxStdDev: 3 },
};

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");

// ---- public state (tests and benchmarks read it) ------------------------------------------------------------
const state = {
  key: KEY, phase: "starting", info: null, error: null, updatesVia: null,  // "events" | "polling"
  webglRenderer: null,
  framesRendered: 0, loadsCompleted: 0, loadedUrl: null, loadedCheckpoint: null, numSplats: 0,
  // Milliseconds since navigation start (performance.now()): module running, first /info, first file parsed,
  // first frame drawn after the splats loaded, first frame with splat pixels on screen (?timing=1 only).
  timings: { moduleStart: performance.now(), firstInfo: null, firstLoad: null, firstFrame: null, firstVisible: null },
  cameraPose: () => ({
    position: camera.position.toArray(), quaternion: camera.quaternion.toArray(),
    target: controls ? controls.target.toArray() : null, fov: camera.fov,
  }),
  measureFps: (seconds = 3, orbitDegPerFrame = 0.5, minFrames = 5) => measureFps(seconds, orbitDegPerFrame, minFrames),
  player: null,
};
window.splatworks = state;
function setPhase(phase) { state.phase = phase; document.body.dataset.state = phase; }

// ---- three.js + Spark ---------------------------------------------------------------------------------------
const renderer = new THREE.WebGLRenderer({ canvas, antialias: false });  // Spark: antialias only costs time
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x000000);
const camera = new THREE.PerspectiveCamera(50, 1, 0.01, 1000);
let redrawUntil = 0;      // keep drawing until then (Spark sorts asynchronously after a change)
let continuous = false;   // measureFps() draws every animation frame
const spark = new SparkRenderer({ renderer, onDirty: () => requestRender(300) });
scene.add(spark);
let controls = null;
let startPose = null;

function requestRender(ms = 500) { redrawUntil = Math.max(redrawUntil, performance.now() + ms); }

function makeControls(up) {
  // OrbitControls orbits about camera.up, read when it is constructed: set up first, rebuild when it changes.
  if (controls) controls.dispose();
  camera.up.copy(up);
  controls = new OrbitControls(camera, canvas);
  controls.enableDamping = false;
  controls.screenSpacePanning = true;
  controls.addEventListener("change", () => requestRender());
}
makeControls(new THREE.Vector3(0, 1, 0));

function resize() {
  const w = canvas.clientWidth || window.innerWidth, h = canvas.clientHeight || window.innerHeight;
  renderer.setPixelRatio(QUALITY[$("quality").value].pixelRatio);
  renderer.setSize(w, h, false);
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
  requestRender();
}
window.addEventListener("resize", resize);

renderer.setAnimationLoop((time) => {
  if (state.player) state.player.tick(time);
  if (!continuous && performance.now() > redrawUntil) return;
  orbitFrame();
  renderer.render(scene, camera);
  state.framesRendered += 1;
  fpsCheck();
  if (state.loadsCompleted > 0 && state.timings.firstFrame === null) {
    // WebGL draws asynchronously: read one pixel back so the time is when the frame is finished, not queued.
    const gl = renderer.getContext();
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    state.timings.firstFrame = performance.now();
  }
  if (TIMING && state.loadsCompleted > 0 && state.timings.firstVisible === null && anySplatPixel()) {
    state.timings.firstVisible = performance.now();
  }
});

// ?timing=1 (benchmarks): after each frame, read a 5x5 grid of pixels back until one is not background, so
// timings.firstVisible is when splats are really on screen (Spark generates and sorts them after loading).
const TIMING = params.get("timing") === "1";
const probe = new Uint8Array(4);
function anySplatPixel() {
  const gl = renderer.getContext(), w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
  for (let i = 1; i <= 5; i++) {
    for (let j = 1; j <= 5; j++) {
      gl.readPixels(Math.floor((w * i) / 6), Math.floor((h * j) / 6), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe);
      if (probe[0] + probe[1] + probe[2] > 30) return true;
    }
  }
  return false;
}

let orbitStep = 0;  // radians per frame about the scene's up axis while measuring (a user orbiting)
const orbitAxis = new THREE.Vector3();
function orbitFrame() {
  if (!orbitStep || !controls) return;
  orbitAxis.copy(camera.up).normalize();
  const offset = camera.position.clone().sub(controls.target).applyAxisAngle(orbitAxis, orbitStep);
  camera.position.copy(controls.target).add(offset);
  camera.lookAt(controls.target);
}

/** Frames per second while drawing every animation frame (and orbiting, so Spark keeps re-sorting); runs at
 *  least `seconds` and at least `minFrames` frames (software rendering can take seconds per frame). */
let fpsRun = null;
function measureFps(seconds, orbitDegPerFrame, minFrames = 5) {
  return new Promise((resolve) => {
    continuous = true;
    orbitStep = THREE.MathUtils.degToRad(orbitDegPerFrame);
    fpsRun = { n0: state.framesRendered, t0: performance.now(), seconds, minFrames, resolve };
  });
}

function fpsCheck() {
  if (!fpsRun) return;
  const frames = state.framesRendered - fpsRun.n0, dt = (performance.now() - fpsRun.t0) / 1000;
  if (dt < fpsRun.seconds || frames < fpsRun.minFrames) return;
  continuous = false;
  orbitStep = 0;
  fpsRun.resolve({ fps: frames / dt, frames, seconds: dt });
  fpsRun = null;
}

// ---- start camera and reset view ----------------------------------------------------------------------------
function poseFromStartCamera(sc) {
  return {
    position: new THREE.Vector3().fromArray(sc.position), quaternion: new THREE.Quaternion().fromArray(sc.quaternion),
    target: new THREE.Vector3().fromArray(sc.target), up: new THREE.Vector3().fromArray(sc.up).normalize(),
    fov: sc.fov, near: sc.near, far: sc.far,
  };
}

function poseFromBounds(mesh) {
  // No training camera known: look at the splats' bounding box from +z (y up).
  const box = mesh.getBoundingBox(true), size = box.getSize(new THREE.Vector3()).length() || 1;
  const center = box.getCenter(new THREE.Vector3());
  return {
    position: center.clone().add(new THREE.Vector3(0, 0, size)), quaternion: new THREE.Quaternion(),
    target: center, up: new THREE.Vector3(0, 1, 0), fov: 50, near: size * 1e-3, far: size * 100,
  };
}

function applyPose(pose) {
  if (!camera.up.equals(pose.up)) makeControls(pose.up);
  camera.fov = pose.fov; camera.near = pose.near; camera.far = pose.far;
  camera.updateProjectionMatrix();
  camera.position.copy(pose.position);
  camera.quaternion.copy(pose.quaternion);
  controls.target.copy(pose.target);
  controls.update();  // the target lies on the viewing axis, so this only removes roll about the scene's up
  requestRender();
}

function resetView() { if (startPose) applyPose(startPose); }
$("reset-view").addEventListener("click", resetView);
window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  if (e.key === "r" || e.key === "R") resetView();
  if (e.key === " " && state.player) { e.preventDefault(); state.player.toggle(); }
});

// ---- splat size and quality ---------------------------------------------------------------------------------
const splatScale = dyno.dynoFloat(1.0);
// Multiplies every Gaussian's scales in the GPU pipeline (no re-download, no re-parse).
const sizeModifier = dyno.dynoBlock({ gsplat: dyno.Gsplat }, { gsplat: dyno.Gsplat }, ({ gsplat }) => {
  const { scales } = dyno.splitGsplat(gsplat).outputs;
  return { gsplat: dyno.combineGsplat({ gsplat, scales: dyno.mul(scales, splatScale) }) };
});
const liveMeshes = new Set();

$("splat-size").addEventListener("input", (e) => {
  splatScale.value = Number(e.target.value);
  for (const mesh of liveMeshes) mesh.updateVersion();
  requestRender();
});
$("quality").addEventListener("change", () => {
  spark.maxStdDev = QUALITY[$("quality").value].maxStdDev;
  resize();
});

/** True when WebGL runs on a CPU rasterizer (no usable GPU): then "fast" is the better default. */
function softwareRenderer() {
  const gl = renderer.getContext(), ext = gl.getExtension("WEBGL_debug_renderer_info");
  const name = ext ? String(gl.getParameter(ext.UNMASKED_RENDERER_WEBGL)) : "";
  state.webglRenderer = name;
  return /swiftshader|llvmpipe|software|softpipe/i.test(name);
}
// ?quality=fast|balanced|best overrides the default (balanced, or fast on a software renderer).
const software = softwareRenderer();
$("quality").value = QUALITY[params.get("quality")] ? params.get("quality") : software ? "fast" : "balanced";
spark.maxStdDev = QUALITY[$("quality").value].maxStdDev;

// ---- status panel and messages ------------------------------------------------------------------------------
function showStatus(text, percent = null) {
  $("status-text").textContent = text;
  $("train-bar").hidden = percent === null;
  if (percent !== null) $("train-fill").style.width = `${Math.max(0, Math.min(100, percent))}%`;
}

function showLoading(fraction) {
  const loading = fraction !== null;
  $("load-text").hidden = $("load-bar").hidden = !loading;
  if (loading) {
    $("load-text").textContent = fraction >= 0 ? `Loading splats ${Math.round(fraction * 100)}%` : "Loading splats…";
    $("load-fill").style.width = `${Math.max(0, fraction) * 100}%`;
  }
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = `message ${kind}`;
}

function describe(info) {
  const status = String(info.status || "unknown").toLowerCase();
  if (FAILED.has(status)) return `Failed${info.stage ? ` during ${info.stage}` : ""}`;
  if (FINISHED.has(status)) return "Finished";
  const label = status === "pending" ? "Queued" : `${status[0].toUpperCase()}${status.slice(1)}`;
  let text = `${label}${info.stage ? `: ${info.stage}` : ""}`;
  if (info.iteration != null && info.total) text += ` · iteration ${info.iteration} / ${info.total}`;
  return text;
}

function showDownloads(files) {
  const span = $("downloads");
  span.replaceChildren();
  for (const [kind, url] of Object.entries(files || {})) {
    if (!url) continue;
    const a = document.createElement("a");
    a.href = url; a.download = ""; a.textContent = `.${kind}`; a.title = `Download the ${kind} file`;
    span.append(a);
  }
}

// ---- loading splat files ------------------------------------------------------------------------------------
function fileTypeOf(url) {
  return new URL(url, location.href).pathname.toLowerCase().endsWith(".ply") ? SplatFileType.PLY : SplatFileType.SPLAT;
}

/** Load one splat file into a SplatMesh (not yet in the scene). Rejects when the file cannot be used. */
async function loadMesh(url, { onProgress } = {}) {
  return initMesh(new SplatMesh({
    url, fileType: fileTypeOf(url),
    onProgress: (e) => onProgress && onProgress(e.lengthComputable && e.total ? e.loaded / e.total : -1),
  }));
}

/** A SplatMesh from .splat bytes already in memory (Spark may take the buffer over: pass one nobody else uses). */
function meshFromSplatBytes(bytes) {
  return initMesh(new SplatMesh({ fileBytes: bytes, fileType: SplatFileType.SPLAT }));
}

async function initMesh(mesh) {
  mesh.objectModifier = sizeModifier;
  mesh.updateGenerator();
  await mesh.initialized;
  return mesh;
}

function addMesh(mesh) { scene.add(mesh); liveMeshes.add(mesh); requestRender(1500); }
function removeMesh(mesh) { scene.remove(mesh); liveMeshes.delete(mesh); mesh.dispose(); requestRender(1500); }

// ---- following a training job: swap in each new checkpoint --------------------------------------------------
let current = null;          // {mesh, url, checkpoint}
let loading = null;          // checkpoint being loaded
let pending = null;          // newest checkpoint seen while another one was loading

function checkpointOf(info) {
  const url = info.files && (info.files.splat || info.files.ply);
  if (!url) return null;
  const version = info.latest_checkpoint ?? info.updated_at ?? "";
  const sep = url.includes("?") ? "&" : "?";
  return { url: version !== "" ? `${url}${sep}ckpt=${encodeURIComponent(version)}` : url, checkpoint: version };
}

async function showCheckpoint(ckpt) {
  if (loading) { pending = ckpt; return; }
  loading = ckpt;
  try {
    const first = current === null;
    if (first) setPhase("loading");
    showLoading(0);
    const mesh = await loadMesh(ckpt.url, { onProgress: showLoading });
    // Add the new checkpoint before removing the old one: no empty frame, and the camera is left alone.
    addMesh(mesh);
    if (current) removeMesh(current.mesh);
    current = { mesh, ...ckpt };
    state.loadedUrl = ckpt.url; state.loadedCheckpoint = ckpt.checkpoint;
    state.numSplats = mesh.packedSplats ? mesh.packedSplats.numSplats : 0;
    state.loadsCompleted += 1;
    if (state.timings.firstLoad === null) state.timings.firstLoad = performance.now();
    if (!startPose) { startPose = poseFromBounds(mesh); applyPose(startPose); }
    if (first && !state.error) showMessage(null);
    setPhase(state.error ? "error" : "ready");
  } catch (err) {
    console.error(err);
    showMessage(`Could not load the splat file (${ckpt.url.split("?")[0]}): ${err.message || err}. ` +
                "Reload to try again; if it persists the file is damaged.");
    setPhase("error");
  } finally {
    showLoading(null);
    loading = null;
    if (pending && (!current || pending.url !== current.url)) { const next = pending; pending = null; showCheckpoint(next); }
    pending = null;
  }
}

async function fetchInfo() {
  const res = await fetch(`${API}/info`, { cache: "no-store" });
  if (res.status === 404) return { notFound: true };
  if (!res.ok) throw new Error(`server answered ${res.status}`);
  return res.json();
}

function showNotFound() {
  state.error = "not-found";
  showStatus("Unknown link");
  showMessage(`No reconstruction found for “${KEY}”. It was deleted, or the link is incomplete; ` +
              "upload photos at / to make a new one.");
  setPhase("not-found");
}

/** Live updates through the server-sent events of /events; resolves "end" when the job finished, "deleted",
 *  or "failed" when the stream is not available (then the caller polls). */
function followEvents() {
  return new Promise((resolve) => {
    if (!window.EventSource || params.has("poll")) { resolve("failed"); return; }
    const source = new EventSource(`${API}/events`);
    state.updatesVia = "events";
    let received = false, errors = 0;
    const finish = (how) => { source.close(); resolve(how); };
    source.addEventListener("status", (e) => { received = true; errors = 0; onInfo(JSON.parse(e.data)); });
    source.addEventListener("deleted", () => finish("deleted"));
    source.addEventListener("end", () => finish("end"));
    source.onerror = () => { errors += 1; if (!received || errors >= 3) finish("failed"); };  // else it reconnects
  });
}

async function follow() {
  let failures = 0, live = true;
  for (;;) {
    let info;
    try {
      info = await fetchInfo();
      failures = 0;
    } catch (err) {
      failures += 1;  // a restarting server: keep trying, say so after a few misses
      if (failures >= 3) showStatus(`Server unreachable (${err.message}); retrying…`);
      await sleep(POLL_MS * Math.min(failures, 5));
      continue;
    }
    if (info.notFound) { showNotFound(); return; }
    onInfo(info);
    const status = String(info.status || "").toLowerCase();
    const over = FINISHED.has(status) || FAILED.has(status);
    if (!over && live) {
      const how = await followEvents();
      if (how === "deleted") { showNotFound(); return; }
      if (how === "failed") live = false;  // no event stream here: poll instead
      continue;  // "end": one more GET /info picks up the final state
    }
    state.updatesVia = "polling";
    // Finished and failed jobs can still publish (a resumed or refined run): keep looking, less often.
    await sleep(over ? POLL_MS * 5 : POLL_MS);
  }
}

function onInfo(info) {
  const firstInfo = state.info === null;
  state.info = info;
  if (firstInfo) {
    state.timings.firstInfo = performance.now();
    if (info.start_camera) { startPose = poseFromStartCamera(info.start_camera); applyPose(startPose); }
  }
  const status = String(info.status || "").toLowerCase();
  showStatus(describe(info), FINISHED.has(status) || FAILED.has(status) ? null : (info.percent ?? null));
  showDownloads(info.files);
  if (state.error === "failed" && !FAILED.has(status)) {  // the job was retried
    state.error = null;
    showMessage(null);
    if (state.phase === "failed") setPhase(current ? "ready" : "waiting");
  }
  if (FAILED.has(status)) {
    state.error = "failed";
    showMessage(`This reconstruction failed${info.stage ? ` during ${info.stage}` : ""}: ` +
                `${info.error || "no reason was given"}.` + (current ? " Showing the last checkpoint." : ""));
    setPhase("failed");
  }
  if (info.kind === "dynamic" || params.get("manifest")) {
    if (!state.player) startPlayer(params.get("manifest") || `${API}/4d/manifest.json`);
    return;
  }
  const ckpt = checkpointOf(info);
  if (ckpt && (!current || current.url !== ckpt.url) && (!loading || loading.url !== ckpt.url)) showCheckpoint(ckpt);
  else if (!ckpt && !current && !FAILED.has(status)) {
    showMessage(FINISHED.has(status) ? "This job finished without a scene to show."
      : `${status === "pending" ? "Queued" : "Working"}: the scene appears here after the first training ` +
        "checkpoint, and updates as training goes on.", "info");
    setPhase(FINISHED.has(status) ? "empty" : "waiting");
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 4D playback: a static layer plus one dynamic layer per frame --------------------------------------------
// Without "encoding" in the manifest each frame is a whole .splat (schema splatworks.4d/1); with "encoding":
// "delta" (schema splatworks.4d/2) frame 0 is a .splat and later frames are deltas (SWD3: full, motion and
// motion+rgba records; SWD2/SWD1 of older exports), materialised by DeltaLayers (delta4d.js) into .splat bytes.
class SequencePlayer {
  /** Plays the sequence described by a manifest (docs/viewer.md): {fps, frames, frames_ready, static, frame_urls,
   *  and for delta manifests encoding, dynamic_count}. */
  constructor(manifestUrl, { cacheSize = 24, prefetch = 3 } = {}) {
    this.manifestUrl = new URL(manifestUrl, location.href).href;
    this.cacheSize = cacheSize; this.prefetch = prefetch;
    this.fps = 30; this.frames = 0; this.framesReady = 0; this.frameUrls = null; this.pattern = null;
    this.frame = 0;             // frame asked for (clock or scrub)
    this.displayedFrame = -1;   // frame whose layer is visible
    this.displayedSplats = 0;   // splats in the visible frame's dynamic layer (rows of pruned Gaussians included)
    this.playing = false; this.clock = 0; this.lastTime = null;
    this.staticMesh = null; this.cache = new Map();  // frame -> {mesh|null, promise, failed}
    this.lastError = null;      // message of the last frame that could not be loaded
    this.encoding = "full"; this.dynamicCount = null; this.manifestSeen = false;
    this.deltaLayers = null;    // DeltaLayers of a delta-encoded sequence
  }

  async start() {
    await this.refresh();
    if (this.staticUrl) { this.staticMesh = await loadMesh(this.staticUrl, { onProgress: showLoading }); addMesh(this.staticMesh); }
    showLoading(null);
    this.bindUi();
    this.seek(0);
    if (this.framesReady < this.frames) this.pollUntilComplete();
  }

  async refresh() {
    const res = await fetch(this.manifestUrl, { cache: "no-store" });
    if (!res.ok) throw new Error(`4D manifest: server answered ${res.status}`);
    const m = await res.json();
    const abs = (u) => (u ? new URL(u, this.manifestUrl).href : null);
    const encoding = m.encoding ?? "full";
    if (encoding !== "full" && encoding !== "delta") {
      throw new Error(`4D manifest encoding "${encoding}" is not one this viewer plays (full, delta); ` +
                      "update splatworks");
    }
    if (encoding === "delta") {
      if (!m.frame_urls) throw new Error("a delta-encoded 4D manifest needs frame_urls");
      if (!(Number.isInteger(m.dynamic_count) && m.dynamic_count >= 0)) {
        throw new Error("a delta-encoded 4D manifest needs dynamic_count (rows of frame 0's dynamic layer)");
      }
      const format = m.delta_format ?? "SWD1";  // older delta manifests may not name it
      if (!DELTA_FORMATS.includes(format)) {
        throw new Error(`4D delta format "${format}" is not one this viewer plays (${DELTA_FORMATS.join(", ")}); ` +
                        "update splatworks");
      }
    }
    const count = encoding === "delta" ? m.dynamic_count : null;
    // Another run's export replaced this one (frame 0 differs): nothing cached can be patched any more.
    if (this.manifestSeen && (encoding !== this.encoding || count !== this.dynamicCount)) this.resetLayers();
    this.manifestSeen = true;
    this.encoding = encoding;
    this.dynamicCount = count;
    if (encoding === "delta" && !this.deltaLayers) {
      this.deltaLayers = new DeltaLayers(m.dynamic_count, (i) => this.frameUrl(i), (i) => this.fileLabel(i));
    }
    this.fps = Number(m.fps) || 30;
    this.frames = Number(m.frames) || (m.frame_urls ? m.frame_urls.length : 0);
    this.framesReady = Math.min(this.frames, m.frames_ready ?? this.frames);
    this.staticUrl = abs(m.static);
    this.frameUrls = m.frame_urls ? m.frame_urls.map(abs) : null;
    this.pattern = m.frame_pattern ? { url: abs(m.frame_pattern), digits: Number(m.frame_digits) || 0 } : null;
    if (!this.frameUrls && !this.pattern) throw new Error("4D manifest has neither frame_urls nor frame_pattern");
    this.updateUi();
  }

  /** Forget every frame layer (the export was replaced by another run's). */
  resetLayers() {
    for (const [i, entry] of this.cache) if (entry.mesh && i !== this.displayedFrame) removeMesh(entry.mesh);
    const shown = this.cache.get(this.displayedFrame);
    this.cache = new Map(shown ? [[-1, shown]] : []);  // keeps the visible layer on screen until a new one shows
    if (shown) this.displayedFrame = -1;
    this.deltaLayers = null;
  }

  async pollUntilComplete() {
    while (this.framesReady < this.frames) {
      await sleep(POLL_MS);
      try { await this.refresh(); } catch (err) { console.warn(err); }
    }
  }

  frameUrl(i) {
    if (this.frameUrls) return this.frameUrls[i];
    // {frame} in the pattern is replaced by the frame index, zero-padded to frame_digits.
    return this.pattern.url.replace(encodeURIComponent("{frame}"), "{frame}")
      .replace("{frame}", String(i).padStart(this.pattern.digits, "0"));
  }

  fileLabel(i) { return `frame ${i + 1} (${new URL(this.frameUrl(i)).pathname.split("/").pop()})`; }

  layer(i, retry = false) {
    let entry = this.cache.get(i);
    if (entry && entry.failed && retry) { this.cache.delete(i); entry = null; }
    if (!entry) {
      entry = { mesh: null, promise: null, failed: false };
      const load = this.encoding === "delta" ? this.deltaLayers.materialise(i).then(meshFromSplatBytes)
        : loadMesh(this.frameUrl(i));
      entry.promise = load.then((mesh) => {
        if (this.cache.get(i) !== entry) { mesh.dispose(); return null; }  // evicted meanwhile
        entry.mesh = mesh; mesh.visible = false; addMesh(mesh);
        if (i === this.frame) this.display(i);
        return mesh;
      }).catch((err) => {
        // Kept as failed (no retry on every tick; a seek to it tries again), and said on screen.
        console.error(`frame ${i}:`, err);
        entry.failed = true;
        this.lastError = `Could not load frame ${i + 1} of the 4D sequence: ${err.message || err}`;
        showMessage(this.lastError);
        return null;
      });
      this.cache.set(i, entry);
      this.evict();
    }
    return entry;
  }

  evict() {
    // Drop the cached frames farthest ahead of the playhead (cyclically) once the cache is full.
    if (this.cache.size <= this.cacheSize) return;
    const n = Math.max(1, this.framesReady);
    const ahead = (i) => (i - this.frame + n) % n;
    const victims = [...this.cache.keys()].sort((a, b) => ahead(b) - ahead(a));
    for (const i of victims.slice(0, this.cache.size - this.cacheSize)) {
      if (i === this.displayedFrame) continue;
      const entry = this.cache.get(i);
      this.cache.delete(i);
      if (entry.mesh) removeMesh(entry.mesh);
    }
  }

  display(i) {
    const entry = this.cache.get(i);
    if (!entry || !entry.mesh) return;
    const prev = this.cache.get(this.displayedFrame);
    entry.mesh.visible = true;
    if (prev && prev !== entry && prev.mesh) prev.mesh.visible = false;
    this.displayedFrame = i;
    this.displayedSplats = entry.mesh.packedSplats ? entry.mesh.packedSplats.numSplats : 0;
    const stale = this.cache.get(-1);  // the last layer of a replaced export (resetLayers)
    if (stale && stale !== entry) { this.cache.delete(-1); if (stale.mesh) removeMesh(stale.mesh); }
    if (this.lastError) {  // a frame loads again: take our message down (not one shown since, e.g. a failed job)
      if ($("message").textContent === this.lastError) showMessage(null);
      this.lastError = null;
    }
    this.updateUi();
    requestRender(300);
  }

  seek(i) {
    if (this.framesReady === 0) return;
    i = ((Math.round(i) % this.framesReady) + this.framesReady) % this.framesReady;
    this.frame = i;
    this.clock = i / this.fps;
    const entry = this.layer(i, true);
    if (entry.mesh) this.display(i);  // otherwise the current layer stays until this one arrives
    for (let k = 1; k <= this.prefetch && k < this.framesReady; k++) this.layer((i + k) % this.framesReady);
    this.updateUi();
  }

  tick(time) {
    if (!this.playing || this.framesReady === 0) { this.lastTime = null; return; }
    if (this.lastTime !== null) {
      // Hold the clock while the next layer is still loading, so playback never skips frames it has not shown.
      const next = this.layer((this.frame + 1) % this.framesReady);
      if (this.displayedFrame === this.frame && next.mesh) this.clock += (time - this.lastTime) / 1000;
      else this.clock = Math.min(this.clock, (this.frame + 1) / this.fps - 1e-6);
    }
    this.lastTime = time;
    const i = Math.floor(this.clock * this.fps) % this.framesReady;
    if (i !== this.frame) { const c = this.clock; this.seek(i); this.clock = c % (this.framesReady / this.fps); }
  }

  play() { this.playing = true; this.updateUi(); }
  pause() { this.playing = false; this.updateUi(); }
  toggle() { this.playing ? this.pause() : this.play(); }

  bindUi() {
    $("player").hidden = false;
    $("help").hidden = true;  // the player bar takes its place
    $("play").addEventListener("click", () => this.toggle());
    $("scrub").addEventListener("input", (e) => { const i = Number(e.target.value); this.pause(); this.seek(i); });
    $("fps").addEventListener("change", (e) => {
      const fps = Number(e.target.value);
      if (fps > 0) { this.fps = fps; this.clock = this.frame / fps; }
    });
  }

  updateUi() {
    $("play").textContent = this.playing ? "Pause" : "Play";
    $("scrub").max = String(Math.max(0, this.frames - 1));
    $("scrub").value = String(this.frame);
    // Frames not yet trained show as the unfilled part of the scrub bar.
    $("scrub").style.setProperty("--ready", `${this.frames ? (100 * this.framesReady) / this.frames : 0}%`);
    $("frame-label").textContent = `${this.frame + 1} / ${this.frames}` +
      (this.framesReady < this.frames ? ` (${this.framesReady} ready)` : "");
    if (document.activeElement !== $("fps")) $("fps").value = String(this.fps);
  }
}

async function startPlayer(manifestUrl) {
  const player = new SequencePlayer(manifestUrl);
  state.player = player;
  setPhase("loading");
  try {
    await player.start();
    state.loadsCompleted += 1;
    if (state.timings.firstLoad === null) state.timings.firstLoad = performance.now();
    if (!startPose && player.staticMesh) { startPose = poseFromBounds(player.staticMesh); applyPose(startPose); }
    showMessage(null);
    setPhase(state.error ? state.error : "ready");
  } catch (err) {
    console.error(err);
    showMessage(`Could not load the 4D sequence: ${err.message || err}`);
    setPhase("error");
  }
}

// ---- start --------------------------------------------------------------------------------------------------
resize();
if (!KEY) {
  showStatus("No scene selected");
  showMessage("This page shows a reconstruction: open it through a share link such as /v/<key>, or upload photos at /.");
  setPhase("not-found");
} else {
  follow();
}
