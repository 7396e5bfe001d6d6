"""The application: configuration, clusters, data sets and the jobs ``wkdist`` runs (kernels,
fit, run, predict, tune, plan, export) with their outputs and progress.

Layer 5 of the package (``wkdist.krr`` below, ``wkdist.cli`` above).
"""

__all__: list[str] = []
