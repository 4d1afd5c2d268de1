import re

import numpy as np

from rmtlens.estimators import check_kernel
from rmtlens.io import atomic_path, load_npy
from rmtlens.kernels import assemble_tiles, entk_tiles
from rmtlens.workflow import job_logger

p = snakemake.params
log = job_logger(snakemake.log[0], "entk_assemble")
files = {tuple(int(v) for v in re.search(r"r(\d+)_c(\d+)\.npy$", f).groups()): f for f in snakemake.input.tiles}
tiles = entk_tiles(p.n_pool, p.n_test, p.tile_size)
with atomic_path(snakemake.output[0]) as tmp:
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(p.n_pool + p.n_test, p.n_pool))
    assemble_tiles(tiles, lambda r, c: load_npy(files[(r, c)]), out)
    out.flush()
    check_kernel(out, p.n_pool)
    del out
log.info("assembled %d tiles (%d computed) into a (%d, %d) kernel", len(tiles), len(files), p.n_pool + p.n_test, p.n_pool)
