"""Motion priors of sequential 4D Gaussians (dynamic/motion.py): rigid motions are free, deformations are not."""

from __future__ import annotations

import math

import torch

from splatworks.dynamic.motion import RigidityPrior, constant_velocity_start, knn, quat_multiply, quat_to_rotmat


def _axis_angle_quat(axis, angle: float) -> torch.Tensor:
    a = torch.tensor(axis, dtype=torch.float32)
    a = a / a.norm()
    return torch.cat([torch.tensor([math.cos(angle / 2)]), a * math.sin(angle / 2)])


def test_quaternion_helpers_match_rotation_matrices():
    q1, q2 = _axis_angle_quat([0, 0, 1], 0.7), _axis_angle_quat([1, 1, 0], -1.1)
    r = quat_to_rotmat(torch.stack([q1, q2]))
    torch.testing.assert_close(r[0] @ r[0].T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(r[0][:2, :2], torch.tensor([[math.cos(0.7), -math.sin(0.7)],
                                                           [math.sin(0.7), math.cos(0.7)]]), atol=1e-6, rtol=0)
    both = quat_to_rotmat(quat_multiply(q1[None], q2[None]))[0]
    torch.testing.assert_close(both, r[0] @ r[1], atol=1e-6, rtol=0)     # Hamilton product = composition


def test_rigid_motion_costs_nothing_and_deformation_costs_something():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(300, 3, generator=g)
    quats = torch.nn.functional.normalize(torch.randn(300, 4, generator=g), dim=-1)
    prior = RigidityPrior.build(means, quats, radius=2.0, k=8)
    turn = _axis_angle_quat([0.3, -1, 0.5], 0.4)
    R = quat_to_rotmat(turn[None])[0]
    moved = means @ R.T + torch.tensor([0.5, -0.2, 1.0])                      # the whole body turns and moves
    turned = quat_multiply(turn.expand(300, 4), quats)                         # and every splat turns with it
    rigid, rot = prior.losses(moved, turned)
    assert float(rigid) < 1e-5 and float(rot) < 1e-5
    stretched = moved * torch.tensor([1.3, 1.0, 1.0])                          # a deformation
    rigid2, _ = prior.losses(stretched, turned)
    assert float(rigid2) > 100 * max(float(rigid), 1e-7)
    _, rot2 = prior.losses(moved, quats)                                       # centres turned, splats did not
    assert float(rot2) < 1e-5                                                  # ... alike for all: no disagreement
    spun = turned.clone()
    spun[::2] = quats[::2]                                                     # half the splats turn, half not
    _, rot3 = prior.losses(moved, spun)
    assert float(rot3) > 0.01


def test_subset_and_neighbours():
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [10, 0, 0]])
    idx, dist = knn(pts, 2)
    assert idx[0].tolist() == [1, 2] and idx[3].tolist() == [1, 0]
    torch.testing.assert_close(dist[0], torch.tensor([1.0, 2.0]))
    prior = RigidityPrior.build(pts, torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4), 1.0, k=2,
                                subset=torch.tensor([0, 1, 2]))
    moved = pts.clone()
    moved[3] += 5.0                                                            # outside the subset: free
    rigid, _ = prior.losses(moved, torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4))
    assert float(rigid) == 0.0
    moved[1] += 1.0
    assert float(prior.losses(moved, torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4))[0]) > 0


def test_constant_velocity_start():
    now, before = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 2.0]])
    assert constant_velocity_start(now, before).tolist() == [[1.5, 2.0]]
    assert constant_velocity_start(now, None) is now
