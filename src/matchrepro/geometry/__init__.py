"""Camera, pose, epipolar and homography geometry in NumPy (float64)."""
