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


def test_oanet_yfcc_raw_data(tmp_path):
    import pickle

    from matchrepro.datasets import yfcc_raw

    test = tmp_path / "raw_data" / "yfcc100m" / "sc" / "test"
    (test / "calibration").mkdir(parents=True)
    (tmp_path / "raw_data" / "pairs").mkdir()
    names = ["a", "b", "c"]
    Rs = [np.eye(3), np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]), np.diag([1.0, -1, -1])]
    ts = [np.array([1.0, 2, 3]), np.array([0.0, 0, 5]), np.array([-1.0, 0, 0])]
    for n, R, t in zip(names, Rs, ts):
        with h5py.File(test / "calibration" / f"calibration_{n}.h5", "w") as f:
            f["K"] = np.array([[500.0, 0, 300], [0, 500, 200], [0, 0, 1]])
            f["R"], f["T"] = R, t.reshape(3, 1)
            f["imsize"] = np.array([[640.0, 480.0]])
    (test / "images.txt").write_text("".join(f"images/{n}.jpg\n" for n in names))
    (test / "calibration.txt").write_text("".join(f"calibration/calibration_{n}.h5\n" for n in names))
    with open(tmp_path / "raw_data" / "pairs" / "sc-te-2-pairs.pkl", "wb") as f:
        pickle.dump([(0, 1, 0.5), (2, 0, 0.3)], f)
    got = yfcc_raw.read_scene_pairs(tmp_path / "raw_data", "sc")
    assert [(p.name0, p.name1) for p in got] == [("sc/test/images/a.jpg", "sc/test/images/b.jpg"),
                                                 ("sc/test/images/c.jpg", "sc/test/images/a.jpg")]
    R_rel = Rs[1] @ Rs[0].T
    assert np.allclose(got[0].T_0to1[:3, :3], R_rel)
    assert np.allclose(got[0].T_0to1[:3, 3], ts[1] - R_rel @ ts[0])
    assert np.allclose(got[0].T_0to1[:3, 3], [2, -1, 2])  # (0,0,5) - R1 (1,2,3) = (0,0,5) - (-2,1,3)
    assert got[0].K0[0, 2] == 300
    centred = yfcc_raw.read_scene_pairs(tmp_path / "raw_data", "sc", principal_point="image_centre")
    assert (centred[0].K0[0, 2], centred[0].K0[1, 2]) == (319.5, 239.5)


def test_loftr_scannet_layout(tmp_path):
    from matchrepro.datasets import scannet

    rel = np.array([[1, 0, 0, 0.1, 0, 1, 0, 0.2, 0, 0, 1, 0.3]], np.float32)
    np.savez(tmp_path / "test.npz", name=np.array([[707, 0, 15, 30]], np.uint16), rel_pose=rel)
    K = np.array([[575.66, 0, 320.0], [0, 578.05, 240.0], [0, 0, 1]])
    np.savez(tmp_path / "intrinsics.npz", scene0707_00=K)
    got = scannet.read_loftr_pairs(tmp_path / "test.npz", tmp_path / "intrinsics.npz")
    assert len(got) == 1
    assert (got[0].name0, got[0].name1) == ("scene0707_00/color/15.jpg", "scene0707_00/color/30.jpg")
    assert np.allclose(got[0].T_0to1[:3, 3], [0.1, 0.2, 0.3]) and np.allclose(got[0].K1, K)


def test_gluefactory_calibrated_pairs(tmp_path):
    from matchrepro.datasets import scannet

    K = " ".join(str(v) for v in [500, 0, 320, 0, 500, 240, 0, 0, 1])
    t12 = "1 0 0 0.5 0 1 0 0 0 0 1 0"
    t16 = t12 + " 0 0 0 1"
    (tmp_path / "p.txt").write_text(f"a.jpg b.jpg {K} {K} {t12}\nc.jpg d.jpg {K} {K} {t16}\n")
    got = scannet.read_calibrated_pairs(tmp_path / "p.txt")
    assert len(got) == 2 and np.allclose(got[0].T_0to1, got[1].T_0to1)
    assert got[0].T_0to1[0, 3] == 0.5
    (tmp_path / "bad.txt").write_text("a b 1 2 3\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:1: expected 32 or 36 columns, found 5"):
        scannet.read_calibrated_pairs(tmp_path / "bad.txt")
