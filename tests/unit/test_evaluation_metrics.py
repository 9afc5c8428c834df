import numpy as np
import pytest

from matchrepro.evaluation import metrics
from matchrepro.geometry.homography import corner_error, warp_points
from tests.conftest import rotation


class TestPoseAUC:
    @pytest.mark.parametrize("seed", range(5))
    def test_matches_closed_form_with_failures(self, seed):
        rng = np.random.default_rng(seed)
        e = rng.uniform(0, 30, 200)
        e[rng.choice(200, 20, replace=False)] = np.inf
        got = metrics.pose_auc(e, [5, 10, 20])
        for g, tau in zip(got, [5, 10, 20]):
            assert abs(g - metrics.pose_auc_closed_form(e, tau)) < 1e-12

    def test_toy_cases(self):
        assert metrics.pose_auc([0.0] * 4, [5]) == [1.0]
        assert metrics.pose_auc([np.inf] * 4, [5, 10]) == [0.0, 0.0]
        assert metrics.pose_auc([], [5]) == [0.0]

    def test_error_equal_to_threshold_is_excluded(self):
        # one error exactly at tau contributes nothing; strict <
        assert metrics.pose_auc([5.0], [5]) == [0.0]
        assert metrics.pose_auc([5.0, 0.0], [5]) == [pytest.approx(0.5)]

    def test_single_pair_hand_computed(self):
        # curve (0,0) -> (2,1) -> (10,1): area = 1 + 8 = 9, /10
        assert metrics.pose_auc([2.0], [10]) == [pytest.approx(0.9)]

    def test_ties(self):
        e = [1.0, 1.0, 1.0, 3.0]
        for tau in (2, 5):
            assert metrics.pose_auc(e, [tau])[0] == pytest.approx(metrics.pose_auc_closed_form(e, tau), abs=1e-12)

    def test_nan_counts_as_failure(self):
        assert metrics.pose_auc([np.nan, 0.0], [5]) == metrics.pose_auc([np.inf, 0.0], [5])


class TestPoseErrors:
    def test_translation_sign_is_folded(self):
        t = np.array([0.3, -0.2, 0.9])
        assert metrics.translation_error_deg(-t, t) == pytest.approx(0.0, abs=1e-6)
        assert metrics.translation_error_deg(-t, t, fold=False) == pytest.approx(180.0, abs=1e-6)

    def test_fold_bounds_to_90(self):
        rng = np.random.default_rng(1)
        for _ in range(50):
            a, b = rng.normal(size=3), rng.normal(size=3)
            e = metrics.translation_error_deg(a, b)
            assert 0 <= e <= 90 + 1e-9
            cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            # OANet/IMP form arccos(|cos|) is the folded error
            assert e == pytest.approx(np.rad2deg(np.arccos(abs(cos))), abs=1e-6)

    def test_rotation_180_degrees_is_clipped_not_nan(self):
        R = rotation([0, 0, 1], 180)
        assert metrics.rotation_error_deg(R, np.eye(3)) == pytest.approx(180.0, abs=1e-4)
        assert metrics.rotation_error_deg(np.eye(3), np.eye(3)) == 0.0

    def test_rotation_error_equals_quaternion_formula(self):
        rng = np.random.default_rng(2)
        for _ in range(20):
            R1 = rotation(rng.normal(size=3), rng.uniform(0, 170))
            R2 = rotation(rng.normal(size=3), rng.uniform(0, 170))
            q = lambda R: np.array([np.sqrt(max(0, 1 + np.trace(R))) / 2])  # noqa: E731
            Rrel = R1.T @ R2
            w = q(Rrel)[0]
            assert metrics.rotation_error_deg(R1, R2) == pytest.approx(np.rad2deg(2 * np.arccos(np.clip(w, -1, 1))), abs=1e-5)

    def test_pose_error_is_max_and_failure_inf(self):
        assert metrics.pose_error_deg(3.0, 7.0) == 7.0
        assert metrics.pose_error_deg(np.nan, 1.0) == np.inf

    def test_zero_gt_translation_gives_nan(self):
        assert np.isnan(metrics.translation_error_deg([1, 0, 0], [0, 0, 0]))


class TestHomographyMetrics:
    def test_mma_on_known_homography(self):
        H = np.array([[1.1, 0.05, 10], [-0.02, 0.95, -5], [1e-4, 2e-5, 1]])
        rng = np.random.default_rng(3)
        p0 = rng.uniform(0, 500, (100, 2))
        p1 = warp_points(H, p0)
        p1[:10] += [2.5, 0]  # 10 matches 2.5 px off
        p1[10:20] += [0, 20]  # 10 outliers
        dist = np.linalg.norm(warp_points(H, p0) - p1, axis=1)
        assert metrics.matched_point_accuracy(dist, [1, 2, 3, 10, 25]) == pytest.approx([0.8, 0.8, 0.9, 0.9, 1.0])

    def test_mma_inclusive_and_empty(self):
        assert metrics.matched_point_accuracy([1.0, 3.0], [1, 3]) == [0.5, 1.0]
        assert metrics.matched_point_accuracy([], [1, 3]) == [0.0, 0.0]

    def test_corner_error_translation_and_failure(self):
        H_gt = np.eye(3)
        H_est = np.array([[1, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])
        assert corner_error(H_est, H_gt, 640, 480) == pytest.approx(5.0)
        assert np.isnan(corner_error(None, H_gt, 640, 480))

    def test_corner_error_uses_w_minus_1_and_h_minus_1(self):
        # scaling about the origin by 2 moves corner (x, y) by |(x, y)|
        H = np.diag([2.0, 2.0, 1.0])
        w, h = 101, 51
        want = np.mean([0, 50, 100, np.hypot(100, 50)])
        assert corner_error(H, np.eye(3), w, h) == pytest.approx(want)

    def test_accuracy_counts_nan_as_wrong(self):
        assert metrics.accuracy_at([0.5, np.nan, 2.0, 3.0], [1, 3]) == [0.25, 0.75]
