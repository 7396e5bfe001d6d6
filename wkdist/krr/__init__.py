"""Kernel ridge regression: the mixing search, the tiled Cholesky solve, saved models and the
scikit-learn style estimator.

Layer 4 of the package (``wkdist.tiled`` below, ``wkdist.app`` above).
"""

__all__: list[str] = []
