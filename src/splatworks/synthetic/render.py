"""Analytic ray casting of a small textured world in numpy: planes, boxes and spheres.

World axes: z up, metres-ish units. Cameras follow the project conventions (OpenCV axes, world_to_camera,
pixel centres at +0.5); depth is camera-space z. Colours come from a procedural 3D texture (multi-scale value
noise plus hard-edged spots) evaluated at the hit point, so every surface point has one colour seen from every
view (no view-dependent shading), which makes cross-view colour checks exact up to resampling.

Glossary of shapes: R rays, H x W image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from splatworks.scene.camera import Camera

# Light direction for Lambert shading (world, z up); view-independent so colours agree across views.
_LIGHT = np.array([0.4, 0.3, 0.87]) / np.linalg.norm([0.4, 0.3, 0.87])
_TABLE = 4096


@dataclass
class Texture:
    """Procedural colour field: value noise over ``octaves`` frequencies plus spots of saturated colour.

    ``offset`` shifts the field per object so that objects do not share a pattern.
    """

    tables: np.ndarray          # (octaves + 2, _TABLE, 3) float32 random values in [0, 1]
    base_freq: float = 2.0      # cycles per world unit of the coarsest octave
    octaves: int = 4
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """(R, 3) world points -> (R, 3) RGB in [0, 1]."""
        p = p + self.offset
        colour = np.full((len(p), 3), 0.5)
        amp = 0.55
        for o in range(self.octaves):
            colour += amp * (_value_noise(p * self.base_freq * 2.0 ** o, self.tables[o]) - 0.5)
            amp *= 0.6
        # Hard-edged spots at two scales give SIFT clean blob and corner responses.
        for k, freq in enumerate((3.0, 7.0)):
            level = _value_noise(p * freq + 11.3 * (k + 1), self.tables[self.octaves + k][:, :1])[:, 0]
            m = np.clip((level - 0.66) * 25.0, 0.0, 1.0)[:, None]
            spot = _value_noise(p * 0.7 + 5.1 * (k + 1), self.tables[self.octaves + k])
            spot = (spot - spot.min(axis=1, keepdims=True)) * 1.6  # saturated palette
            colour = colour * (1 - m) + np.clip(spot, 0, 1) * m
        return np.clip(colour, 0.0, 1.0)


def make_texture(rng: np.random.Generator, offset: np.ndarray | None = None, octaves: int = 4) -> Texture:
    tables = rng.random((octaves + 2, _TABLE, 3)).astype(np.float32)
    return Texture(tables=tables, octaves=octaves, offset=np.zeros(3) if offset is None else np.asarray(offset))


def _value_noise(p: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise: (R, 3) points -> (R, C) values interpolated from a hashed lattice table (T, C).

    T must be a power of two (the hash is masked, not divided).
    """
    base = np.floor(p)
    f = p - base
    f = f * f * (3.0 - 2.0 * f)  # smoothstep: no visible lattice creases
    i = base.astype(np.int64)
    # Per-axis hash terms and weights for the lower (0) and upper (1) lattice corner.
    hx = (i[:, 0] * 73856093, (i[:, 0] + 1) * 73856093)
    hy = (i[:, 1] * 19349663, (i[:, 1] + 1) * 19349663)
    hz = (i[:, 2] * 83492791, (i[:, 2] + 1) * 83492791)
    wx = (1 - f[:, 0], f[:, 0])
    wy = (1 - f[:, 1], f[:, 1])
    wz = (1 - f[:, 2], f[:, 2])
    mask = len(table) - 1
    out = np.zeros((len(p), table.shape[1]), dtype=np.float32)
    for dx in (0, 1):
        for dy in (0, 1):
            hxy = hx[dx] ^ hy[dy]
            wxy = wx[dx] * wy[dy]
            for dz in (0, 1):
                out += (wxy * wz[dz]).astype(np.float32)[:, None] * table[(hxy ^ hz[dz]) & mask]
    return out


# ---- shapes -------------------------------------------------------------------------------------------------
@dataclass
class Plane:
    """Axis-aligned rectangle ``x[axis] = value`` with bounds on the other two axes (lo, hi each (3,))."""

    axis: int
    value: float
    lo: np.ndarray
    hi: np.ndarray
    texture: Texture
    dynamic: bool = False

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.value - o[:, self.axis]) / d[:, self.axis]
        p = o + t[:, None] * d
        inside = np.ones(len(o), dtype=bool)
        for a in range(3):
            if a != self.axis:
                inside &= (p[:, a] >= self.lo[a]) & (p[:, a] <= self.hi[a])
        t = np.where(inside & (t > 1e-6), t, np.inf)
        n = np.zeros_like(o)
        n[:, self.axis] = -np.sign(d[:, self.axis])  # face the viewer
        return t, n


@dataclass
class Box:
    """Box with centre ``center`` (3,), half sizes ``half`` (3,), rotated by ``yaw`` radians about world z."""

    center: np.ndarray
    half: np.ndarray
    yaw: float
    texture: Texture
    dynamic: bool = False

    def _rot(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # box -> world

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.full(len(o), np.inf)
        normals = np.zeros_like(o)
        # Cull rays that miss the bounding sphere: boxes cover a small part of each view.
        oc = self.center - o
        dd = (d * d).sum(axis=1)
        along = (oc * d).sum(axis=1) / dd
        dist2 = (oc * oc).sum(axis=1) - along ** 2 * dd
        near = np.flatnonzero(dist2 <= (self.half ** 2).sum())
        if len(near) == 0:
            return t, normals
        R = self._rot()
        ol = (o[near] - self.center) @ R  # world -> box frame (R^T x)
        dl = d[near] @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            t1 = (-self.half - ol) * inv
            t2 = (self.half - ol) * inv
        tmin = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
        tmax = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
        t_near = tmin.max(axis=1)
        t_far = tmax.min(axis=1)
        hit = (t_near <= t_far) & (t_near > 1e-6)
        axis = tmin.argmax(axis=1)
        rows = np.arange(len(near))
        nl = np.zeros((len(near), 3))
        nl[rows, axis] = -np.sign(dl[rows, axis])
        t[near] = np.where(hit, t_near, np.inf)
        normals[near] = nl @ R.T
        return t, normals


@dataclass
class Sphere:
    center: np.ndarray
    radius: float
    texture: Texture
    dynamic: bool = False

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = o - self.center
        a = (d * d).sum(axis=1)
        b = 2.0 * (oc * d).sum(axis=1)
        c = (oc * oc).sum(axis=1) - self.radius ** 2
        disc = b * b - 4 * a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        t = (-b - sq) / (2 * a)
        t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
        p = o + t[:, None] * d
        n = (p - self.center) / self.radius
        return t, n


Shape = Plane | Box | Sphere


@dataclass
class RenderOutput:
    """One rendered view.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1] (sky colour where nothing is hit).
        alpha: (H, W) float32, 1 where a surface is hit (coverage when supersampled).
        depth: (H, W) float32 camera-space z of the pixel-centre ray (0 where nothing is hit).
        dynamic: (H, W) bool, pixel centre sees a dynamic shape.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray
    dynamic: np.ndarray


def shade(shapes: list[Shape], points: np.ndarray, normals: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Colour of surface points (R, 3) with normals (R, 3) on shapes ``index`` (R,) -> (R, 3) RGB in [0, 1]."""
    out = np.zeros((len(points), 3))
    lambert = 0.55 + 0.45 * np.abs(normals @ _LIGHT)  # two-sided, view-independent
    for k, shape in enumerate(shapes):
        sel = index == k
        if sel.any():
            out[sel] = shape.texture(points[sel]) * lambert[sel, None]
    return out


def cast(shapes: list[Shape], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays (o (R, 3), d (R, 3)): t (R,) (inf = miss), normals (R, 3), shape index (R,) (-1)."""
    best_t = np.full(len(o), np.inf)
    best_n = np.zeros_like(o)
    best_i = np.full(len(o), -1)
    for k, shape in enumerate(shapes):
        t, n = shape.intersect(o, d)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_n[closer] = n[closer]
        best_i[closer] = k
    return best_t, best_n, best_i


def camera_rays(cam: Camera, offsets: tuple[float, float] = (0.5, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """World rays through pixel positions ``(x + ox, y + oy)``; ``d`` is scaled so that ``t`` equals camera z.

    Returns o (H*W, 3) and d (H*W, 3), rows in raster order.
    """
    ys, xs = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    u = xs.ravel() + offsets[0]
    v = ys.ravel() + offsets[1]
    d_cam = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=1)
    c2w = cam.camera_to_world
    d = d_cam @ c2w[:3, :3].T
    o = np.broadcast_to(c2w[:3, 3], d.shape).copy()
    return o, d


# Sub-pixel sample offsets per supersampling level (rotated grid for 4: fewer aligned-edge artefacts).
_SAMPLES = {1: [(0.5, 0.5)], 2: [(0.25, 0.25), (0.75, 0.75)],
            4: [(0.375, 0.125), (0.875, 0.375), (0.125, 0.625), (0.625, 0.875)]}


def render(shapes: list[Shape], cam: Camera, sky: np.ndarray, supersample: int = 2) -> RenderOutput:
    """Ray-cast one view with ``supersample`` (1, 2 or 4) rays per pixel for colour, one centre ray for depth."""
    H, W = cam.height, cam.width
    o, d = camera_rays(cam)
    t, _, idx = cast(shapes, o, d)
    hit = np.isfinite(t)
    depth = np.where(hit, t, 0.0).reshape(H, W).astype(np.float32)
    dynamic = np.zeros(H * W, dtype=bool)
    for k, shape in enumerate(shapes):
        if shape.dynamic:
            dynamic |= idx == k

    rgb = np.zeros((H * W, 3))
    alpha = np.zeros(H * W)
    samples = _SAMPLES[supersample]
    for offset in samples:
        o_s, d_s = camera_rays(cam, offset)
        t_s, n_s, i_s = cast(shapes, o_s, d_s)
        h = np.isfinite(t_s)
        col = np.broadcast_to(sky, (H * W, 3)).copy()
        col[h] = shade(shapes, o_s[h] + t_s[h, None] * d_s[h], n_s[h], i_s[h])
        rgb += col
        alpha += h
    rgb /= len(samples)
    alpha /= len(samples)
    return RenderOutput(rgb=rgb.reshape(H, W, 3).astype(np.float32), alpha=alpha.reshape(H, W).astype(np.float32),
                        depth=depth, dynamic=dynamic.reshape(H, W))
