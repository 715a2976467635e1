"""Do the registered poses agree with the images' pairwise geometry? Find, repair or drop misplaced images.

COLMAP verifies every matched pair with a two-view geometry; with ``compute_relative_pose`` it stores the
relative rotation ``R*_ij`` (camera j from camera i). On objects with symmetric or repeated structure and a
plain background (NeRF-synthetic lego) many verified pairs are wrong: their matches pair a part with its
mirror image, so ``R*_ij`` is far from the truth. Incremental mapping then sometimes registers a group of
neighbouring views onto the mirrored side (lego: 6 views turned by ~178 degrees). Inside such a group the
views agree with each other; they disagree with their pairs to the rest of the model.

The check, on rotations only (two-view translation directions are unreliable for short baselines):

1. Edge error: ``e_ij = angle(R_j R_i^T R*_ij^T)`` for registered images i, j (world_to_camera rotations R).
2. Components of the graph of *strong consistent* edges (``e_ij < max_deg`` and ``inliers >= strong``): the
   largest component seeds the trusted main part of the model, which then absorbs every component whose
   edges to it agree more than they disagree (inlier-weighted).
3. Every other component is judged by all its verified edges to the main part: when the inliers of
   disagreeing edges outweigh those of agreeing ones (by ``ratio``, 2 by default), it is *misplaced*.
4. Repair: a misplaced component moved rigidly keeps its internal geometry, so its true rotations are
   ``R_i Q`` for one rotation Q. Each edge to the main part proposes ``Q = R_i^T R*_ij^T R_j``; the proposal
   agreed on by the most inliers wins when it has enough support. Edges that contradict the (corrected)
   rotations are removed from the database and the component is registered again (``worker.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Edge:
    """A verified image pair: ids, inlier count, relative rotation camera i -> camera j (3, 3)."""

    i: int
    j: int
    inliers: int
    R_ij: np.ndarray


@dataclass
class MisplacedGroup:
    """Images misplaced together, with the evidence and (when found) the rotation that would fix them.

    Attributes:
        image_ids: the group's images.
        agreeing, disagreeing: inliers of its edges to the main part that agree / disagree with its poses.
        correction: (3, 3) Q with true rotation ``R_i @ Q`` (None when no proposal has enough support).
        support: inliers of the edges that agree with the correction.
    """

    image_ids: list[int]
    agreeing: int
    disagreeing: int
    correction: np.ndarray | None = None
    support: int = 0
    names: list[str] = field(default_factory=list)


def angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a (3, 3) rotation matrix in degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def read_edges(db_path: str | Path, min_inliers: int = 15, model: Any = None) -> list[Edge]:
    """Verified pairs with a relative pose and at least ``min_inliers`` inliers.

    With ``model`` (a pycolmap Reconstruction), pairs between its registered images get their relative pose
    recomputed from the stored geometry with the model's calibrated cameras: at matching time COLMAP only has
    a guessed focal length (1.2 x the image size), which bends the relative rotations by degrees.
    """
    import pycolmap

    db = pycolmap.Database.open(str(db_path))
    try:
        pair_ids, geoms = db.read_two_view_geometries()
        with_pose = {int(pycolmap.TwoViewGeometryConfiguration.__members__[n]) for n in
                     ("CALIBRATED", "UNCALIBRATED", "PLANAR", "PANORAMIC", "PLANAR_OR_PANORAMIC")}
        registered = set(model.reg_image_ids()) if model is not None else set()
        keypoints: dict[int, np.ndarray] = {}
        edges = []
        for pid, g in zip(pair_ids, geoms):
            n = len(g.inlier_matches)
            if n < min_inliers or int(g.config) not in with_pose:
                continue
            i, j = (int(k) for k in pycolmap.pair_id_to_image_pair(pid))
            if i in registered and j in registered:
                for k in (i, j):
                    if k not in keypoints:
                        keypoints[k] = np.asarray(db.read_keypoints(k)[:, :2], dtype=np.float64)
                cam_i = model.cameras[model.images[i].camera_id]
                cam_j = model.cameras[model.images[j].camera_id]
                if not pycolmap.estimate_two_view_geometry_pose(cam_i, keypoints[i], cam_j, keypoints[j], g):
                    continue
            edges.append(Edge(i, j, n, np.asarray(g.cam2_from_cam1.rotation.matrix(), dtype=np.float64)))
    finally:
        db.close()
    return edges


def edge_error(edge: Edge, rotations: dict[int, np.ndarray]) -> float:
    """Disagreement (degrees) between the model's relative rotation and the pair's own."""
    R_model = rotations[edge.j] @ rotations[edge.i].T
    return angle_deg(R_model @ edge.R_ij.T)


def strong_threshold(edges: list[Edge], strong: int) -> int:
    """``strong`` inliers, lowered to the 75th percentile of the pairs' inliers for small or weak images."""
    if not edges:
        return strong
    return int(min(strong, np.percentile([e.inliers for e in edges], 75)))


def _components(nodes: list[int], links: list[tuple[int, int]]) -> list[list[int]]:
    parent = {n: n for n in nodes}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in links:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for n in nodes:
        groups.setdefault(find(n), []).append(n)
    return sorted(groups.values(), key=lambda g: (-len(g), min(g)))


def find_misplaced(edges: list[Edge], rotations: dict[int, np.ndarray], max_deg: float = 10.0,
                   strong: int = 100, ratio: float = 2.0) -> tuple[list[int], list[MisplacedGroup]]:
    """Split registered images into the trusted main part and misplaced groups (steps 2-3 of the docstring).

    A group is misplaced when the inliers of its disagreeing edges to the main part exceed ``ratio`` times
    those of its agreeing ones (wrong pairs are common on symmetric objects, so a bare majority is not enough).
    Returns (main image ids, misplaced groups). Groups without any edge to the main part are not judged
    (there is no evidence either way) and count as neither.
    """
    nodes = sorted(rotations)
    live = [e for e in edges if e.i in rotations and e.j in rotations]
    errors = {(e.i, e.j): edge_error(e, rotations) for e in live}
    links = [(e.i, e.j) for e in live if e.inliers >= strong and errors[(e.i, e.j)] < max_deg]
    comps = _components(nodes, links)
    if not comps:
        return [], []

    def tally(members: set[int], core: set[int]) -> tuple[int, int]:
        good = bad = 0
        for e in live:
            if (e.i in members and e.j in core) or (e.j in members and e.i in core):
                if errors[(e.i, e.j)] < max_deg:
                    good += e.inliers
                else:
                    bad += e.inliers
        return good, bad

    # Grow the core with components that agree with it (correct parts linked only by weaker pairs, e.g. the
    # two ends of an arc of views whose middle is misplaced).
    main, rest = set(comps[0]), [set(c) for c in comps[1:]]
    grown = True
    while grown:
        grown = False
        for comp in list(rest):
            good, bad = tally(comp, main)
            if good > 0 and good >= bad:
                main |= comp
                rest.remove(comp)
                grown = True
    groups = []
    for comp in rest:
        good, bad = tally(comp, main)
        if bad > ratio * good:
            groups.append(MisplacedGroup(image_ids=sorted(comp), agreeing=good, disagreeing=bad))
    return sorted(main), groups


def correction_for(group: MisplacedGroup, edges: list[Edge], rotations: dict[int, np.ndarray], main: set[int],
                   max_deg: float = 10.0, min_support: int = 60, min_edges: int = 2) -> MisplacedGroup:
    """Step 4: the rigid rotation Q that best reconciles ``group`` with the main part (None if unsupported)."""
    members = set(group.image_ids)
    proposals = []  # (Q, inliers)
    for e in edges:
        if e.i in members and e.j in main:
            i, j, R_ij = e.i, e.j, e.R_ij
        elif e.j in members and e.i in main:
            i, j, R_ij = e.j, e.i, e.R_ij.T  # camera i (member) -> camera j (main)
        else:
            continue
        proposals.append((rotations[i].T @ R_ij.T @ rotations[j], e.inliers))
    best, best_support, best_count = None, 0, 0
    for Q, _ in proposals:
        agree = [(Q2, n) for Q2, n in proposals if angle_deg(Q2 @ Q.T) < max_deg]
        support = sum(n for _, n in agree)
        if support > best_support:
            best, best_support, best_count = Q, support, len(agree)
    if best is None or best_support < min_support or best_count < min_edges:
        return group
    group.correction, group.support = best, best_support
    return group


def edges_to_remove(edges: list[Edge], rotations: dict[int, np.ndarray], groups: list[MisplacedGroup],
                    max_deg: float = 10.0) -> list[tuple[int, int]]:
    """Pairs that contradict the model (with misplaced groups corrected, or cut off when uncorrectable)."""
    fixed = dict(rotations)
    cut: set[int] = set()
    for g in groups:
        for i in g.image_ids:
            if g.correction is not None:
                fixed[i] = rotations[i] @ g.correction
            else:
                cut.add(i)
    out = []
    for e in edges:
        if e.i not in fixed or e.j not in fixed:
            continue
        if (e.i in cut) != (e.j in cut) or edge_error(e, fixed) >= max_deg:
            out.append((e.i, e.j))
    return out


def delete_pairs(db_path: str | Path, pairs: list[tuple[int, int]]) -> None:
    """Remove the two-view geometries of ``pairs`` from the database (their matches stay for the record)."""
    import pycolmap

    db = pycolmap.Database.open(str(db_path))
    try:
        for i, j in pairs:
            db.delete_two_view_geometry(i, j)
    finally:
        db.close()


def model_rotations(rec: Any) -> dict[int, np.ndarray]:
    """world_to_camera rotations (3, 3) of the registered images of a pycolmap Reconstruction, by image id."""
    return {int(i): np.asarray(rec.images[i].cam_from_world().rotation.matrix(), dtype=np.float64)
            for i in rec.reg_image_ids()}
