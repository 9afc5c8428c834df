"""``python -m matchrepro match IMG1 IMG2``: your own pair, any sizes, grayscale or colour, EXIF."""

import json
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from matchrepro.models.imp import IMP
from matchrepro.models.patch2pix import Patch2Pix
from tests.cli_in_process import run_cli
from tests.conftest import REPO

TINY_ARCH = {"widths": [16, 16, 32, 32, 32], "blocks": [1, 1, 1, 1], "regressor_conv": [16, 16], "regressor_fc": [16, 8]}


def run_match(*args, cwd=REPO):
    """A real ``python -m matchrepro match`` process: what a user sees in the terminal (the error tests)."""
    return subprocess.run([sys.executable, "-m", "matchrepro", "match", *map(str, args), "--threads", "2"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def run_match_here(*args):
    """The same command in this process (tests/cli_in_process.py): the successful runs, without
    a 3 s interpreter start-up each."""
    return run_cli(["match", *map(str, args), "--threads", "2"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """image0: grayscale PNG (400 x 600). image1: the same photo at 0.8 scale, colour, stored
    sideways in a JPEG whose EXIF orientation flag (6: rotate 90° clockwise to display) turns it
    upright again. Displayed, image1 = image0 scaled by 0.8 about the origin."""
    tmp = tmp_path_factory.mktemp("pair")
    rgb = skimage.data.coffee()  # (400, 600, 3)
    cv2.imwrite(str(tmp / "gray.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    small = cv2.resize(rgb, (480, 320), interpolation=cv2.INTER_AREA)
    stored = np.ascontiguousarray(np.rot90(small, k=1))  # counter-clockwise: EXIF 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp / "sideways.jpg", quality=95, exif=exif)
    return tmp


def test_sift_on_grayscale_png_and_exif_rotated_jpeg(images, tmp_path):
    r = run_match_here(images / "gray.png", images / "sideways.jpg", "--method", "sift", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "sift_mnn:" in r.stdout
    d = np.load(tmp_path / "gray-sideways.sift_mnn.npz")
    assert set(d.files) >= {"keypoints0", "keypoints1", "matches", "scores", "image_size0", "image_size1", "meta"}
    assert d["image_size0"].tolist() == [600, 400] and d["image_size1"].tolist() == [480, 320]  # displayed sizes
    m = d["matches"]
    assert len(m) > 100 and len(d["scores"]) == len(m)
    k0, k1 = d["keypoints0"][m[:, 0]], d["keypoints1"][m[:, 1]]
    # the EXIF flag was applied and keypoints are in displayed pixels: most matches follow x1 = 0.8 x0
    err = np.linalg.norm(k1 - 0.8 * k0, axis=1)
    assert np.median(err) < 1.5 and (err < 3).mean() > 0.7, np.median(err)
    assert json.loads(str(d["meta"]))["method"] == "sift_mnn"
    pic = cv2.imread(str(tmp_path / "gray-sideways.sift_mnn.png"))
    assert pic.shape == (400, 600 + 480, 3)  # side by side, displayed orientation, colour


def test_h5_output(images, tmp_path):
    r = run_match_here(images / "sideways.jpg", images / "gray.png", "--method", "sift_mnn_ratio", "--format", "h5",
                  "--out", tmp_path, "--no-picture")
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "sideways-gray.sift_mnn_ratio.h5", "r") as f:
        assert f["matches"].shape[1] == 2 and f["keypoints0"].shape[1] == 2
        assert json.loads(f.attrs["meta"])["method"] == "sift_mnn_ratio"
    assert not (tmp_path / "sideways-gray.sift_mnn_ratio.png").exists()


@pytest.mark.parametrize("family", ["imp", "eimp", "patch2pix", "ncnet"])
def test_learned_methods_with_given_weights(images, tmp_path, family):
    torch.manual_seed(0)
    if family in ("imp", "eimp"):
        ck = {"model": IMP(128).state_dict(), "variant": family}
    else:
        ck = {"model": Patch2Pix(arch=TINY_ARCH).state_dict(), "arch": TINY_ARCH, "feat_idx": [0, 1, 2, 3]}
    torch.save(ck, tmp_path / "w.pth")
    r = run_match_here(images / "gray.png", images / "sideways.jpg", "--method", family, "--weights", tmp_path / "w.pth",
                  "--out", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    name = r.stdout.split(":")[0]
    d = np.load(tmp_path / f"gray-sideways.{name}.npz")
    m = d["matches"]
    assert m.ndim == 2 and m.shape[1] == 2 and len(d["scores"]) == len(m)
    if len(m):
        assert (m[:, 0] < len(d["keypoints0"])).all() and (m[:, 1] < len(d["keypoints1"])).all()
        # keypoints within the displayed images
        assert (d["keypoints1"] <= [480, 320]).all() and (d["keypoints0"] <= [600, 400]).all()
    assert (tmp_path / f"gray-sideways.{name}.png").is_file()


def test_unreadable_file_is_named(images, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    r = run_match(images / "gray.png", tmp_path / "broken.jpg", "--method", "sift", "--out", tmp_path / "o")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: cannot decode image (corrupt or unsupported format): {tmp_path / 'broken.jpg'}"]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    r = run_match_here(tmp_path / "missing.png", images / "gray.png", "--method", "sift")
    assert r.returncode == 1 and "image not found:" in r.stderr and "missing.png" in r.stderr


def test_missing_weights_say_how_to_get_them(images, tmp_path):
    r = run_match(images / "gray.png", images / "gray.png", "--method", "patch2pix", "--config",
                  REPO / "config.yaml", "--out", tmp_path, cwd=tmp_path)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert "weights 'patch2pix_demo'" in line and "results/training/patch2pix_demo/model_best.pth" in line
    assert "--weights" in line
    r = run_match_here(images / "gray.png", images / "gray.png", "--method", "superglue", "--out", tmp_path)
    assert r.returncode == 1 and "--method superglue" in r.stderr
