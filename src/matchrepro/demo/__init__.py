"""Builders of the demo datasets, written in the exact on-disk formats of the real ones.

Images come from photographs that ship inside scikit-image; the geometry is known exactly
(ray-cast textured planes with known cameras and depth, or known homographies), so the
readers, matchers and evaluators run unchanged on them.
"""
