"""3DGS .ply and antimatter15 .splat files, checked byte by byte against the formats (not only via our reader)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from splatworks.errors import InputError
from splatworks.splat import io as sio

SH_C0 = 0.28209479177387814


def make_params(n: int = 5, degree: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    shN = torch.zeros(n, k - 1, 3)
    for i in range(n):
        for b in range(k - 1):
            for c in range(3):
                shN[i, b, c] = 1000 * i + 100 * c + b  # encodes (gaussian, band, channel)
    return {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.randn(n, 3, generator=g) - 3,
        "opacities": torch.randn(n, generator=g) * 2,
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": shN,
    }


def test_ply_layout_by_hand(tmp_path: Path) -> None:
    p = make_params(n=4)
    path = sio.write_ply(tmp_path / "g.ply", p)
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 4"]
    props = [line.split() for line in header[3:-1]]
    assert all(t[0] == "property" and t[1] == "float" for t in props)
    names = [t[2] for t in props]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected and len(names) == 62
    body = data[end:]
    assert len(body) == 4 * 62 * 4
    for i in range(4):
        row = struct.unpack_from("<62f", body, i * 62 * 4)
        np.testing.assert_allclose(row[0:3], p["means"][i].numpy(), rtol=1e-6)
        assert row[3:6] == (0.0, 0.0, 0.0)
        np.testing.assert_allclose(row[6:9], p["sh0"][i, 0].numpy(), rtol=1e-6)
        # f_rest is channel-major: all 15 bands of red, then green, then blue.
        for c in range(3):
            for b in range(15):
                assert row[9 + c * 15 + b] == 1000 * i + 100 * c + b
        assert row[54] == pytest.approx(float(p["opacities"][i]), rel=1e-6)
        np.testing.assert_allclose(row[55:58], p["scales"][i].numpy(), rtol=1e-6)
        np.testing.assert_allclose(row[58:62], p["quats"][i].numpy(), rtol=1e-6)


def test_ply_round_trip_and_plyfile(tmp_path: Path) -> None:
    from plyfile import PlyData

    p = make_params(n=7, degree=2)
    path = sio.write_ply(tmp_path / "g.ply", p)
    v = PlyData.read(str(path))["vertex"]  # an independent reader agrees
    assert len(v) == 7 and "f_rest_23" in v.data.dtype.names and "f_rest_24" not in v.data.dtype.names
    np.testing.assert_array_equal(np.asarray(v["f_rest_8"]), p["shN"][:, 0, 1].numpy())  # green band 0
    back = sio.read_ply(path)
    for k in p:
        assert back[k].shape == p[k].shape, k
        torch.testing.assert_close(back[k], p[k].float(), rtol=0, atol=0)


def expected_splat_record(p: dict[str, torch.Tensor], i: int) -> bytes:
    """The 32 bytes of Gaussian i, straight from the spec."""
    pos = p["means"][i].double().tolist()
    scale = [math.exp(s) for s in p["scales"][i].double().tolist()]
    rgb = [0.5 + SH_C0 * c for c in p["sh0"][i, 0].double().tolist()]
    a = 1 / (1 + math.exp(-float(p["opacities"][i])))
    rgba = [int(min(max(v * 255, 0), 255)) for v in rgb + [a]]
    q = p["quats"][i].double()
    q = (q / q.norm()).tolist()
    rot = [int(min(max(v * 128 + 128, 0), 255)) for v in q]
    return struct.pack("<3f3f4B4B", *pos, *scale, *rgba, *rot)


def test_splat_bytes_by_hand(tmp_path: Path) -> None:
    p = make_params(n=6, seed=3)
    p["sh0"][2, 0] = torch.tensor([5.0, -5.0, 0.0])  # colours outside [0, 1] clip
    path = sio.write_splat(tmp_path / "g.splat", p)
    data = path.read_bytes()
    assert len(data) == 6 * 32
    # order: exp(sum log scales) * sigmoid(opacity), largest first
    key = [math.exp(float(p["scales"][i].sum())) / (1 + math.exp(-float(p["opacities"][i]))) for i in range(6)]
    order = sorted(range(6), key=lambda i: -key[i])
    for slot, i in enumerate(order):
        rec = data[slot * 32:(slot + 1) * 32]
        exp = expected_splat_record(p, i)
        got = struct.unpack("<3f3f4B4B", rec)
        want = struct.unpack("<3f3f4B4B", exp)
        np.testing.assert_allclose(got[:6], want[:6], rtol=1e-6)
        # uint8 fields: exact, except a value landing within float rounding of an integer boundary
        assert all(abs(g - w) <= 1 for g, w in zip(got[6:], want[6:]))
        assert sum(g != w for g, w in zip(got[6:], want[6:])) <= 1
    rec2 = struct.unpack("<3f3f4B4B", data[order.index(2) * 32:(order.index(2) + 1) * 32])
    assert rec2[6] == 255 and rec2[7] == 0


def test_splat_round_trip_and_export(tmp_path: Path) -> None:
    from splatworks.cli import main

    p = make_params(n=50, seed=1)
    ply = sio.write_ply(tmp_path / "g.ply", p)
    assert main(["export", str(ply), "-o", str(tmp_path / "g.splat")]) == 0
    s = sio.read_splat(tmp_path / "g.splat")
    assert len(s["means"]) == 50
    order = sio.splat_order(p["scales"].numpy(), p["opacities"].numpy())
    torch.testing.assert_close(s["means"], p["means"][order])
    torch.testing.assert_close(s["scales"], p["scales"][order], atol=1e-5, rtol=1e-5)
    # quantised fields come back within one 8-bit step
    rgb = 0.5 + SH_C0 * p["sh0"][order, 0]
    assert ((0.5 + SH_C0 * s["sh0"][:, 0]) - rgb.clamp(0, 1)).abs().max() <= 1 / 255 + 1e-6
    q = torch.nn.functional.normalize(p["quats"][order], dim=-1)
    assert (s["quats"] - q).abs().max() <= 1 / 128 + 1e-6
    # .splat -> .ply -> .splat keeps positions and RGBA bytes exactly; scales to float precision; rotations
    # within one step (they are renormalised before quantising again)
    assert main(["export", str(tmp_path / "g.splat"), "-o", str(tmp_path / "h.ply")]) == 0
    assert main(["export", str(tmp_path / "h.ply"), "-o", str(tmp_path / "h.splat")]) == 0
    a = np.frombuffer((tmp_path / "g.splat").read_bytes(), dtype=sio.SPLAT_DTYPE)
    b = np.frombuffer((tmp_path / "h.splat").read_bytes(), dtype=sio.SPLAT_DTYPE)
    np.testing.assert_array_equal(a["position"], b["position"])
    np.testing.assert_array_equal(a["rgba"], b["rgba"])
    np.testing.assert_allclose(a["scale"], b["scale"], rtol=1e-6)
    assert np.abs(a["rot"].astype(int) - b["rot"].astype(int)).max() <= 1


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "bad.splat").write_bytes(b"x" * 33)
    with pytest.raises(InputError, match="multiple of 32"):
        sio.read_splat(tmp_path / "bad.splat")
    with pytest.raises(InputError, match="unknown"):
        sio.write_gaussians(tmp_path / "x.obj", {})


def test_checkpoint_rotation_is_atomic(tmp_path: Path) -> None:
    def writer(text: str):
        def write(folder: Path) -> None:
            (folder / "point_cloud.ply").write_text(text)
        return write

    sio.write_checkpoint(tmp_path, 10, writer("ten"))
    assert sio.latest_checkpoint(tmp_path) == (10, tmp_path / "point_cloud" / "iteration_10")

    seen_during_write = []

    def slow(folder: Path) -> None:
        (folder / "point_cloud.ply").write_text("twenty")
        seen_during_write.append(sorted(p.name for p in (tmp_path / "point_cloud").iterdir()))

    sio.write_checkpoint(tmp_path, 20, slow)
    # while the new checkpoint was being written the previous one was still complete and the new one hidden
    assert seen_during_write == [[".iteration_20.tmp", "iteration_10"]]
    assert [p.name for p in (tmp_path / "point_cloud").iterdir()] == ["iteration_20"]

    def crash(folder: Path) -> None:
        (folder / "point_cloud.ply").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        sio.write_checkpoint(tmp_path, 30, crash)
    assert [p.name for p in (tmp_path / "point_cloud").iterdir()] == ["iteration_20"]
    assert (tmp_path / "point_cloud" / "iteration_20" / "point_cloud.ply").read_text() == "twenty"
    assert sio.latest_checkpoint(tmp_path)[0] == 20
    # a temp folder left by a hard crash (power loss) is ignored by latest_checkpoint and replaced next time
    (tmp_path / "point_cloud" / ".iteration_30.tmp").mkdir()
    assert sio.latest_checkpoint(tmp_path)[0] == 20
    sio.write_checkpoint(tmp_path, 30, writer("thirty"))
    assert [p.name for p in (tmp_path / "point_cloud").iterdir()] == ["iteration_30"]
