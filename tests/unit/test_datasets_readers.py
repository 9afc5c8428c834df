import h5py
import numpy as np
import pytest

from matchrepro.datasets import hpatches, megadepth, pairs
from matchrepro.errors import DatasetError


def test_pairs_round_trip(tmp_path):
    K0 = np.array([[500.5, 0, 319.5], [0, 501.25, 239.5], [0, 0, 1]])
    K1 = np.diag([400.0, 400.0, 1.0])
    T = np.eye(4)
    T[:3, 3] = [-24373.26, 1.0 / 3.0, 2.0]
    line = pairs.format_pair_line("a/b/c.jpg", "a/b/d.jpg", K0, K1, T, 1, 3)
    assert len(line.split()) == 38
    f = tmp_path / "p.txt"
    f.write_text(line + "\n\n" + line + "\n")
    got = pairs.read_pairs(f)
    assert [p.index for p in got] == [0, 1]
    p = got[1]
    assert (p.name0, p.name1, p.rot0, p.rot1) == ("a/b/c.jpg", "a/b/d.jpg", 1, 3)
    assert np.array_equal(p.K0, K0) and np.array_equal(p.K1, K1) and np.array_equal(p.T_0to1, T)


def test_pairs_errors_name_file_and_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a b 0 0 1 2 3\n")
    with pytest.raises(DatasetError, match=r"p\.txt:1: expected 38 columns, found 7"):
        pairs.read_pairs(f)
    with pytest.raises(DatasetError, match="pairs file not found"):
        pairs.read_pairs(tmp_path / "missing.txt")


def _hpatches(root, names):
    for n in names:
        d = root / n
        d.mkdir(parents=True)
        for k in range(1, 7):
            (d / f"{k}.ppm").write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")
        for k in range(2, 7):
            (d / f"H_1_{k}").write_text("1 0  0\n0 1 0\n0 0 1\n")


def test_hpatches_pairs_exclusions_and_counts(tmp_path):
    _hpatches(tmp_path, ["i_a", "i_b", "v_c", "v_artisans", "notaseq"])
    got = hpatches.list_pairs(tmp_path, exclude=["v_artisans"])
    assert len(got) == 15
    assert got[0].name0 == "i_a/1.ppm" and got[4].name1 == "i_a/6.ppm"
    assert [p.kind for p in got].count("v") == 5
    assert np.array_equal(got[0].H_0to1, np.eye(3))
    with pytest.raises(DatasetError, match=r"found 2 illumination \+ 1 viewpoint sequences after exclusions, expected 52 \+ 56"):
        hpatches.list_pairs(tmp_path, exclude=hpatches.D2NET_EXCLUDED, expected={"illumination": 52, "viewpoint": 56})


def test_hpatches_bad_homography_file(tmp_path):
    _hpatches(tmp_path, ["v_x"])
    (tmp_path / "v_x" / "H_1_3").write_text("1 2 3\n")
    with pytest.raises(DatasetError, match=r"H_1_3: expected 9 numbers, found 3"):
        hpatches.list_pairs(tmp_path)


def test_megadepth_scene_info_and_depth(tmp_path):
    def obj(xs):
        a = np.empty(len(xs), dtype=object)
        a[:] = xs
        return a

    K = np.array([[500.0, 0, 100], [0, 500, 80], [0, 0, 1]])
    T = np.eye(4)
    np.savez(tmp_path / "0001.npz", image_paths=obj(["Undistorted_SfM/0001/images/a.jpg", None]),
             depth_paths=obj(["phoenix/x/a.h5", None]), intrinsics=obj([K, None]), poses=obj([T, None]),
             overlap_matrix=-np.ones((2, 2)))
    info = megadepth.read_scene_info(tmp_path / "0001.npz")
    assert info.scene == "0001"
    assert info.valid.tolist() == [True, False]
    assert np.array_equal(info.intrinsics[0], K)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["depth"] = np.full((3, 4), 2.5, np.float32)
    assert megadepth.read_depth(tmp_path / "d.h5").shape == (3, 4)
    np.savez(tmp_path / "bad.npz", image_paths=obj(["x"]))
    with pytest.raises(DatasetError, match=r"bad\.npz: missing keys"):
        megadepth.read_scene_info(tmp_path / "bad.npz")
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["other"] = np.zeros(2)
    with pytest.raises(DatasetError, match=r"e\.h5: no dataset 'depth'"):
        megadepth.read_depth(tmp_path / "e.h5")
