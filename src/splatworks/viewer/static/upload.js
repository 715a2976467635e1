// splatworks upload page: send photos / a video / a zip to POST /recon/jobs (or, "multi-view videos", one video
// per camera to POST /recon/dynamic-jobs), then follow the job's progress through GET /recon/pub/{pub_key}/info,
// and offer the viewer, the share link and the result files.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(200, Number(params.get("poll")) || 2000);
const FINISHED = new Set(["done", "finished", "completed", "succeeded", "success"]);
const FAILED = new Set(["failed", "error", "cancelled", "canceled"]);
const state = { phase: "idle", jobId: null, pubKey: null, info: null, error: null };
window.splatworksUpload = state;  // read by tests

let chosen = [];
const kind = () => document.querySelector('input[name="kind"]:checked').value;  // static | dynamic
for (const r of document.querySelectorAll('input[name="kind"]')) {
  r.addEventListener("change", () => $("dynamic-options").classList.toggle("hidden", kind() !== "dynamic"));
}

function choose(files) {
  chosen = [...files];
  const bytes = chosen.reduce((s, f) => s + f.size, 0);
  $("chosen").textContent = chosen.length
    ? `${chosen.length} file${chosen.length > 1 ? "s" : ""} (${(bytes / 1e6).toFixed(1)} MB): ` +
      chosen.slice(0, 4).map((f) => f.name).join(", ") + (chosen.length > 4 ? ", …" : "")
    : "";
  $("start").disabled = chosen.length === 0;
}

$("files").addEventListener("change", (e) => choose(e.target.files));
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", (e) => choose(e.dataTransfer.files));

function setStatus(text, percent = null) {
  $("job-status").textContent = text;
  if (percent !== null) $("job-fill").style.width = `${Math.max(0, Math.min(100, percent))}%`;
}

function fail(message) {
  state.error = message;
  state.phase = "failed";
  $("job-error").textContent = message;
  document.body.dataset.state = "failed";
}

/** POST the files as multipart `files`; resolves with the JSON answer. XHR, for upload progress. */
function upload(files) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    const dynamic = kind() === "dynamic";
    for (const f of files) form.append(dynamic ? "videos" : "files", f, f.name);
    if (dynamic) {
      const calib = $("calibration").files[0];
      if (calib) form.append("calibration", calib, calib.name);
      if ($("held-out").value.trim()) form.append("held_out_camera", $("held-out").value.trim());
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", dynamic ? "/recon/dynamic-jobs" : "/recon/jobs");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) setStatus(`Uploading… ${Math.round((100 * e.loaded) / e.total)}%`, (100 * e.loaded) / e.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr.response);
      const detail = xhr.response && (xhr.response.detail || xhr.response.error);
      reject(new Error(typeof detail === "string" ? detail : `the server answered ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("the upload was interrupted (network error); try again"));
    xhr.send(form);
  });
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!chosen.length) return;
  $("start").disabled = true;
  $("job").classList.remove("hidden");
  $("job-error").textContent = "";
  state.error = null;
  state.phase = "uploading";
  document.body.dataset.state = "uploading";
  let answer;
  try {
    answer = await upload(chosen);
  } catch (err) {
    fail(`Upload refused: ${err.message}`);
    $("start").disabled = false;
    return;
  }
  state.jobId = answer.job_id;
  state.pubKey = answer.pub_key;
  const viewer = new URL(`/v/${encodeURIComponent(answer.pub_key)}`, location.href).href;
  $("open-viewer").href = viewer;
  $("share").value = viewer;
  state.phase = "queued";
  document.body.dataset.state = "queued";
  setStatus("Queued…", 0);
  follow();
});

$("copy").addEventListener("click", async () => {
  const link = $("share").value;
  try {
    await navigator.clipboard.writeText(link);
  } catch {
    $("share").select();  // clipboard API needs https or localhost; fall back to the selection
    document.execCommand("copy");
  }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy link"; }, 1500);
});

async function follow() {
  for (;;) {
    try {
      const res = await fetch(`/recon/pub/${encodeURIComponent(state.pubKey)}/info`, { cache: "no-store" });
      if (res.ok) {
        const info = await res.json();
        state.info = info;
        const status = String(info.status || "").toLowerCase();
        state.phase = status;
        document.body.dataset.state = status;
        for (const kind of ["splat", "ply"]) {
          const url = info.files && info.files[kind];
          $(`dl-${kind}`).classList.toggle("hidden", !url);
          if (url) $(`dl-${kind}`).href = url;
        }
        for (const [id, url] of [["dl-video", info.video], ["dl-metrics", info.metrics_url]]) {  // dynamic jobs
          $(id).classList.toggle("hidden", !url);
          if (url) $(id).href = url;
        }
        if (FAILED.has(status)) { fail(`The reconstruction failed${info.stage ? ` during ${info.stage}` : ""}: ${info.error || "no reason given"}`); return; }
        if (FINISHED.has(status)) { setStatus("Finished: open the viewer or download the result.", 100); return; }
        const progress = info.iteration != null && info.total ? ` · iteration ${info.iteration} / ${info.total}` : "";
        const label = status === "pending" ? "Queued" : status ? status[0].toUpperCase() + status.slice(1) : "Working";
        setStatus(`${label}${info.stage ? `: ${info.stage}` : ""}${progress}` +
                  (info.percent != null ? ` (${Math.round(info.percent)}%)` : ""), info.percent ?? null);
      }
    } catch (err) {
      setStatus(`Server unreachable (${err.message}); retrying…`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
