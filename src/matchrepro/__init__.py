"""matchrepro: a Snakemake reproduction of Patch2Pix and IMP/EIMP.

Conventions used across the package (stated once here, repeated where they bite):

* Pixels are ``(x, y)`` with x = column, y = row; the centre of the top-left pixel is (0, 0).
* Poses are 4x4 world-to-camera ``T_w2c`` (``x_cam = R @ x_world + t``); the relative pose of a
  pair is ``T_0to1 = T_w2c1 @ inv(T_w2c0)``.
* ``H_0to1`` maps pixels of image 0 to pixels of image 1.
* Matches are ``(K, 2)`` integer arrays of keypoint indices ``(i0, i1)``.
"""

__version__ = "0.1.0"
