import numpy as np
import pytest

from matchrepro.geometry.camera import (
    inplane_rotation, project, relative_pose, rotate_intrinsics, rotate_relative_pose,
    scale_intrinsics, transform,
)
from tests.conftest import rotation


@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_rotated_image_matches_rotated_camera(rot):
    """Pixels of np.rot90(image, rot) equal projections with the rotated K and camera."""
    w, h = 40, 30
    K = np.array([[50.0, 0, 17.3], [0, 52, 11.8], [0, 0, 1]])
    rng = np.random.default_rng(rot)
    X = rng.uniform([-1, -1, 3], [1, 1, 5], (50, 3))
    uv, _ = project(X, K)
    inside = (uv[:, 0] > 0) & (uv[:, 0] < w - 1) & (uv[:, 1] > 0) & (uv[:, 1] < h - 1)
    uv, X = uv[inside], X[inside]
    # where does pixel (x, y) of the stored image go after np.rot90(k=rot)? use an index image
    img = np.arange(w * h).reshape(h, w)
    rimg = np.rot90(img, k=rot)
    xi, yi = np.round(uv).astype(int).T
    ids = img[yi, xi]
    K_r = rotate_intrinsics(K, (w, h), rot)
    uv_r, _ = project(transform(inplane_rotation(rot), X), K_r)
    # rounded pixel of the rotated projection holds the same index
    xr, yr = np.round(uv_r).astype(int).T
    assert np.array_equal(rimg[yr, xr], ids)
    # and sub-pixel positions map exactly
    if rot == 1:
        assert np.allclose(uv_r, np.stack([uv[:, 1], w - 1 - uv[:, 0]], 1))


def test_rotate_relative_pose_round_trip():
    T0 = np.eye(4)
    T0[:3, :3] = rotation([1, 2, 3], 20)
    T0[:3, 3] = [1, 2, 3]
    T1 = np.eye(4)
    T1[:3, :3] = rotation([0, 1, 0], -15)
    T1[:3, 3] = [0.5, -1, 2]
    T_up = relative_pose(T0, T1)
    for r0 in range(4):
        for r1 in range(4):
            T_st = relative_pose(inplane_rotation(r0).T @ T0, inplane_rotation(r1).T @ T1)
            assert np.allclose(rotate_relative_pose(T_st, r0, r1), T_up)


def test_scale_intrinsics():
    K = np.array([[1000.0, 0, 640], [0, 1000, 480], [0, 0, 1]])
    Ks = scale_intrinsics(K, (2.0, 2.0))
    assert np.allclose(Ks, [[500, 0, 320], [0, 500, 240], [0, 0, 1]])
