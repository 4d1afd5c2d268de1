"""rmtlens: a random-matrix-theory lens on how neural representations generalise.

The package holds the numerics (kernels, ridge paths, estimators, theory) and the
small amount of I/O the workflow needs; the Snakemake workflow in ``workflow/``
only unpacks its inputs and calls these functions.
"""

__version__ = "0.1.0"
