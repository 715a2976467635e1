"""Every bad upload gets its 4xx with a message that says what to fix, against a real server on loopback; nothing
of a refused upload stays on disk. Also: API token, unknown ids, the half-written-result guard, the store's
attempt guard."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest

from splatworks.service.jobs import JobPaths, latest_checkpoint, latest_result, new_id, ply_is_complete
from splatworks.service.store import ERROR, PENDING, RUNNING, JobRecord, SqliteJobStore
from splatworks.service.testing import ServerProcess

TOKEN = "test-token-0123456789abcdef"
MiB = 1024 * 1024


def png_bytes(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A small valid-looking PNG whose header declares w x h pixels (a decompression bomb)."""
    data = bytearray(png_bytes(8, 8))
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def zip_of(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("svc-limits") / "data"
    srv = ServerProcess(data, "--api-token", TOKEN, "--limits.max-files", "20", "--limits.max-file-bytes",
                        str(4 * MiB), "--limits.max-total-bytes", str(10 * MiB), "--limits.max-image-pixels",
                        str(4_000_000), "--limits.zip-max-ratio", "50", "--limits.min-free-disk-bytes", "0",
                        "--train-preset", "tiny", "--max-concurrent-jobs", "1")
    with srv:
        yield srv


@pytest.fixture()
def client(server: ServerProcess):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        yield c


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


GOOD = [(f"p{i}.png", png_bytes(seed=i)) for i in range(3)]
CASES = {
    "no token": (None, files(*GOOD), 401, "API token"),
    "not multipart": ("json", None, 415, "multipart/form-data"),
    "no files": ("fields", None, 400, "no files received"),
    "empty file": (None, files(("a.png", b""), *GOOD), 400, "empty file"),
    "too many files": (None, files(*[(f"{i}.png", png_bytes(8, 8, i)) for i in range(21)]), 413, "more than 20 files"),
    "file too large": (None, files(("big.jpg", os.urandom(5 * MiB)), *GOOD), 413, "for one file"),
    "text as .jpg": (None, files(("notes.jpg", b"hello, I am not a photo" * 10), *GOOD), 422, "notes.jpg"),
    "truncated png": (None, files(("cut.png", png_bytes(256, 256)[:3000]), *GOOD), 422, "cut.png"),
    "decompression bomb": (None, files(("bomb.png", png_bomb()), *GOOD), 422, "bomb.png"),
    "too few images": (None, files(*GOOD[:2]), 422, "at least 3"),
    "zip traversal": (None, files(("x.zip", zip_of({"../../evil.png": GOOD[0][1], "b.png": GOOD[1][1],
                                                      "c.png": GOOD[2][1]}))), 422, "'..'"),
    "zip absolute path": (None, files(("x.zip", zip_of({"/etc/evil.png": GOOD[0][1]}))), 422, "absolute path"),
    "zip bomb ratio": (None, files(("x.zip", zip_of({"zeros.png": bytes(3 * MiB)}))), 413, "zip-bomb"),
    "zip too big unpacked": (None, files(("x.zip", zip_of({f"z{i}.png": bytes(3 * MiB) for i in range(4)},
                                                          zipfile.ZIP_STORED))), 413, "limit of 10 MB"),
    "nested zip": (None, files(("x.zip", zip_of({"inner.zip": zip_of({"a.png": GOOD[0][1]}), "b.png": GOOD[1][1]}))),
                   422, "nested archives"),
    "not a zip inside": (None, files(("x.zip", zip_of({"a.png": b"garbage" * 100, "b.png": GOOD[1][1],
                                                       "c.png": GOOD[2][1]}))), 422, "a.png"),
    "broken zip": (None, files(("x.zip", b"PK\x03\x04" + os.urandom(2000))), 422, "not a readable .zip"),
    "tar.gz": (None, files(("x.tgz", b"\x1f\x8b\x08" + os.urandom(500))), 415, "only .zip"),
    "zip plus photos": (None, files(("x.zip", zip_of({"a.png": GOOD[0][1]})), *GOOD), 422, "not a mix"),
    "broken video": (None, files(("v.mp4", b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))), 422, "video"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_gets_its_4xx(server: ServerProcess, client: httpx.Client, case: str) -> None:
    mode, parts, code, needle = CASES[case]
    if mode is None and case == "no token":
        r = httpx.post(server.url + "/recon/jobs", files=parts, timeout=60)
    elif mode == "json":
        r = client.post("/recon/jobs", json={"files": ["a.png"]})
    elif mode == "fields":
        r = client.post("/recon/jobs", files=[("note", (None, b"hello"))])
    else:
        r = client.post("/recon/jobs", files=parts)
    assert r.status_code == code, (case, r.status_code, r.text)
    assert needle.lower() in r.json()["detail"].lower(), (case, r.json()["detail"])


def raw_post(server: ServerProcess, headers: dict[str, str], chunks) -> tuple[int, str, int]:
    """POST over a plain socket (so a body can be declared but not sent, and sending can stop at a refusal).

    Returns (status code, response text, bytes of body sent before the server answered)."""
    import socket

    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "127.0.0.1", "Authorization": f"Bearer {TOKEN}",
                                                  **headers}.items())
    sock.sendall(f"POST /recon/jobs HTTP/1.1\r\n{head}\r\n".encode())
    sent = 0
    sock.setblocking(False)
    for chunk in chunks:
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break  # the server already answered
        except BlockingIOError:
            pass
        except OSError:
            break
        sock.setblocking(True)
        try:
            sock.sendall(chunk)
            sent += len(chunk)
        except OSError:
            break
        sock.setblocking(False)
    sock.setblocking(True)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + 20:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except OSError:
        pass
    sock.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.decode("utf-8", "replace"), sent


def test_oversized_body_is_refused_early(server: ServerProcess) -> None:
    # Declared too large: refused from the header alone, before the body is read.
    status, text, _ = raw_post(server, {"Content-Type": "multipart/form-data; boundary=b",
                                        "Content-Length": str(11 * MiB)}, [b"x" * 1000])
    assert status == 413 and "limit of 10 MB" in text
    # Streamed without a length (chunked): cut off when the running total crosses the 10 MB limit.
    boundary = "sw-boundary"

    def body():
        for i in range(8):  # 8 x 3 MB parts: each under the per-file limit, together far over the total limit
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.jpg\"\r\n"
                    "Content-Type: image/jpeg\r\n\r\n").encode()
            part = head + os.urandom(3 * MiB) + b"\r\n"
            for k in range(0, len(part), 256 * 1024):
                piece = part[k:k + 256 * 1024]
                yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        end = f"--{boundary}--\r\n".encode()
        yield f"{len(end):x}\r\n".encode() + end + b"\r\n0\r\n\r\n"

    status, text, sent = raw_post(server, {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                           "Transfer-Encoding": "chunked"}, body())
    assert status == 413, text
    assert "limit of 10 MB" in text
    assert sent < 20 * MiB, f"the server read {sent / MiB:.0f} MB of a 24 MB body before refusing it"


def test_refused_uploads_leave_nothing(server: ServerProcess, client: httpx.Client) -> None:
    test_oversized_body_is_refused_early(server)
    jobs_dir = server.data_dir / "jobs"
    assert not [p for p in jobs_dir.iterdir()], "a refused upload left files behind"
    counts = client.get("/health").json()["jobs"]
    assert sum(counts.values()) == 0


def test_unknown_ids_and_admin(server: ServerProcess, client: httpx.Client) -> None:
    fake = new_id()
    assert client.get(f"/recon/jobs/{fake}/status").status_code == 404
    assert client.get("/recon/jobs/../../etc/passwd/status").status_code == 404
    for path in (f"/v/{fake}", f"/recon/pub/{fake}/info", f"/recon/pub/{fake}/cloud.ply",
                 f"/recon/pub/{fake}/scene.splat"):
        assert client.get(path).status_code == 404, path
    assert client.delete(f"/recon/jobs/{fake}").status_code == 404
    assert client.post(f"/recon/jobs/{fake}/cancel").status_code == 404
    r = httpx.post(server.url + "/recon/admin/reimport")
    assert r.status_code == 401
    r = client.post("/recon/admin/reimport")
    assert r.status_code == 200 and r.json() == {"imported": []}
    assert client.get("/openapi.json").json()["paths"]["/recon/jobs"]["post"]["requestBody"]
    assert client.get("/docs").status_code == 200


# ---- no in-process shortcuts below: real files, real SQLite ---------------------------------------------------

def test_half_written_results_are_never_served(tmp_path: Path) -> None:
    from splatworks.splat.io import write_ply, write_splat
    from splatworks.viewer.testing import random_params

    paths = JobPaths.of(tmp_path, new_id()).make()
    params = random_params(50)
    for it in (2, 4):
        folder = paths.point_cloud / f"iteration_{it}"
        folder.mkdir(parents=True)
        write_ply(folder / "point_cloud.ply", params)
        write_splat(folder / "scene.splat", params)
    assert latest_checkpoint(paths) == 4
    # A crash mid-write of iteration 6: truncated files are skipped, iteration 4 stays the one served.
    good = (paths.point_cloud / "iteration_4" / "point_cloud.ply").read_bytes()
    bad = paths.point_cloud / "iteration_6"
    bad.mkdir()
    (bad / "point_cloud.ply").write_bytes(good[: len(good) - 7])
    (bad / "scene.splat").write_bytes(b"\0" * 33)
    assert not ply_is_complete(bad / "point_cloud.ply")
    assert latest_result(paths, "ply")[0] == 4 and latest_result(paths, "splat")[0] == 4
    assert latest_checkpoint(paths) == 4


def test_store_attempt_guard_and_queue_order(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite")
    ids = [new_id() for _ in range(3)]
    for i in ids:
        store.create(JobRecord(job_id=i, pub_key=new_id()))
    first = store.claim_next()
    assert first.job_id == ids[0] and first.status == RUNNING and first.attempt == 1
    assert store.requeue_running("restart") == [ids[0]]
    again = store.claim_next()
    assert again.job_id == ids[0] and again.attempt == 2  # back at the head of the queue, next attempt
    assert not store.update(ids[0], attempt=1, status=ERROR)  # a stale worker cannot overwrite attempt 2
    assert store.get(ids[0]).status == RUNNING
    assert store.claim_next().job_id == ids[1]
    assert store.get(ids[2]).status == PENDING
    assert store.log_tail(ids[0], 5) == ["restart"]


def test_admin_reimport_serves_a_folder_of_known_splats(server: ServerProcess, client: httpx.Client,
                                                        tmp_path: Path) -> None:
    """`splatworks admin reimport FOLDER` (what the viewer tests use) makes a DONE job the running server serves;
    a job folder whose database row was lost comes back with its old public key."""
    import subprocess
    import sys

    from splatworks.splat.io import write_ply, write_splat
    from splatworks.viewer.testing import random_params, ring_scene

    out = tmp_path / "trained"
    folder = out / "point_cloud" / "iteration_7000"
    folder.mkdir(parents=True)
    params = random_params(64)
    write_ply(folder / "point_cloud.ply", params)
    write_splat(folder / "scene.splat", params)
    ring_scene().save(out)  # scene.json next to the results: the viewer's start camera
    cmd = [sys.executable, "-m", "splatworks", "admin", "reimport", str(out), "--data-dir", str(server.data_dir)]
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    ids = __import__("json").loads(line)
    info = client.get(f"/recon/pub/{ids['pub_key']}/info").json()
    assert info["status"] == "DONE" and info["latest_checkpoint"] == 7000 and info["start_camera"]
    splat = client.get(f"/recon/pub/{ids['pub_key']}/scene.splat")
    assert splat.status_code == 200 and splat.content == (folder / "scene.splat").read_bytes()
    assert client.get(ids["viewer_url"]).status_code == 200
    assert client.get(f"/recon/jobs/{ids['job_id']}/status").json()["status"] == "DONE"

    # Lose the row, keep the folder: reimport (over HTTP, admin token) restores it under the same ids.
    store = SqliteJobStore(server.data_dir / "splatworks.db")
    assert store.delete(ids["job_id"])
    assert client.get(f"/recon/pub/{ids['pub_key']}/info").status_code == 404
    r = client.post("/recon/admin/reimport").json()
    assert r["imported"] == [{"job_id": ids["job_id"], "pub_key": ids["pub_key"]}]
    assert client.get(f"/recon/pub/{ids['pub_key']}/cloud.ply").status_code == 200
    assert client.delete(f"/recon/jobs/{ids['job_id']}").status_code == 200


def test_incomplete_uploads_are_swept_on_start(tmp_path: Path) -> None:
    """A crash mid-upload leaves a folder without job.json or database row: removed on the next start once old
    enough; a folder with job.json (a complete upload whose row is missing) is kept for `admin reimport`."""
    import time as _time

    from splatworks.service.admin import sweep_incomplete_uploads
    from splatworks.service.settings import ServiceSettings

    settings = ServiceSettings(data_dir=tmp_path)
    store = SqliteJobStore(tmp_path / "db.sqlite")
    old, fresh, complete = (settings.jobs_dir / new_id() for _ in range(3))
    for folder in (old, fresh, complete):
        (folder / "upload").mkdir(parents=True)
        (folder / "upload" / "00000.part").write_bytes(b"half a photo")
    (complete / "job.json").write_text("{}")
    for folder in (old, complete):
        os.utime(folder, (_time.time() - 3600,) * 2)
    assert sweep_incomplete_uploads(settings, store) == [old.name]
    assert not old.exists() and fresh.exists() and complete.exists()
