"""Free-space carving (depth.losses.FreeSpaceLoss): which Gaussians dense depth puts in free space, and that the
penalty fades exactly those."""

from __future__ import annotations

import json

import numpy as np
import torch

from splatworks.depth.losses import FreeSpaceLoss, free_space_loss_from_file
from splatworks.scene.camera import Camera


def _rig(depth_value: float = 2.0, w: int = 32, h: int = 24):
    """Two cameras 0.2 apart looking down +z at a wall at z = depth_value; the right third of view 0 is unknown."""
    cams = []
    for x in (0.0, 0.2):
        w2c = np.eye(4)
        w2c[0, 3] = -x
        cams.append(Camera(name=f"cam{len(cams):02d}", width=w, height=h, fx=30.0, fy=30.0, cx=w / 2, cy=h / 2,
                           world_to_camera=w2c))
    depths = np.full((2, h, w), depth_value - 0.0, dtype=np.float32)
    for i, c in enumerate(cams):
        depths[i] = depth_value  # camera z of the wall is the same everywhere for a fronto-parallel wall
    depths[0, :, 2 * w // 3:] = 0.0
    return cams, depths


def _loss(cams, depths, **kw) -> FreeSpaceLoss:
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return FreeSpaceLoss(t(depths), t(np.stack([c.world_to_camera for c in cams])), t(np.stack([c.K for c in cams])),
                         weight=1.0, **kw)


def test_centres_in_front_of_the_surface_are_free_on_and_behind_are_not():
    cams, depths = _rig()
    loss = _loss(cams, depths, margin=0.05, min_views=2)
    means = torch.tensor([[0.1, 0.0, 1.0],     # in front of the wall in both views: free
                          [0.1, 0.0, 1.97],    # on the wall (within the margin): kept
                          [0.1, 0.0, 3.0],     # behind the wall (hidden): kept
                          [0.6, 0.0, 1.0],     # in front, but over view 0's unknown third: one vote only
                          [0.1, 5.0, 1.0]])    # outside both views: no vote
    assert loss.free_space(means).tolist() == [True, False, False, False, False]
    assert _loss(cams, depths, margin=0.05, min_views=1).free_space(means).tolist() == [True, False, False, True,
                                                                                          False]


def test_depth_edges_do_not_vote():
    """Next to an unknown pixel the 3x3 neighbourhood is unknown: a centre there is never called free."""
    cams, depths = _rig()
    loss = _loss(cams, depths, min_views=1)
    w = cams[0].width
    edge_u = 2 * w // 3 - 1                         # last known column of view 0
    z = 1.0
    x = (edge_u + 0.5 - cams[0].cx) / cams[0].fx * z
    inner_x = (edge_u - 4 + 0.5 - cams[0].cx) / cams[0].fx * z
    free = loss.free_space(torch.tensor([[x, 0.0, z], [inner_x, 0.0, z]]))
    # view 1 (shifted 0.2) still sees both centres over known wall: one vote each; view 0 votes only inside
    one_view = _loss(cams[:1], depths[:1], min_views=1).free_space(torch.tensor([[x, 0.0, z], [inner_x, 0.0, z]]))
    assert one_view.tolist() == [False, True]
    assert free.tolist() == [True, True]


def test_penalty_fades_only_free_gaussians_and_file_round_trip(tmp_path):
    cams, depths = _rig()
    np.save(tmp_path / "dense_depth.npy", depths)
    (tmp_path / "dense_depth.json").write_text(json.dumps({"cameras": [
        {**c.to_dict(), "name": f"{c.name}/000000.png"} for c in cams]}))
    loss = free_space_loss_from_file(tmp_path / "dense_depth.npy", ["cam00", "cam01"], weight=1.0)
    assert loss is not None and len(loss.depths) == 2
    assert free_space_loss_from_file(tmp_path / "dense_depth.npy", ["cam07"], weight=1.0) is None
    params = {"means": torch.tensor([[0.1, 0.0, 1.0], [0.1, 0.0, 3.0]]),
              "opacities": torch.zeros(2, requires_grad=True)}
    opt = torch.optim.Adam([params["opacities"]], lr=0.1)
    for it in range(50):
        opt.zero_grad()
        loss(it, 0, None, params).backward()
        opt.step()
    o = torch.sigmoid(params["opacities"].detach())
    assert o[0] < 0.05 and abs(float(o[1]) - 0.5) < 1e-6
