"""Tiling of the eNTK into separately computed blocks, and their assembly (SPEC §1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One block of the stored ``(N_pool + m) x N_pool`` eNTK.

    ``row``/``col`` index the row and column blocks; ``rows``/``cols`` are the
    half-open index ranges. A tile whose rows lie in the pool and whose column
    block is to the right of its row block is the transpose of a computed tile
    (``mirror`` = its ``(row, col)``); every other tile is computed.
    """

    row: int
    col: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    mirror: tuple[int, int] | None = None


def entk_tiles(n_pool: int, n_test: int, tile_size: int) -> list[Tile]:
    """Tiles covering the ``(n_pool + n_test) x n_pool`` kernel, row-major.

    Row blocks split ``[0, n_pool + n_test)`` and column blocks split ``[0, n_pool)``
    in steps of ``tile_size``; symmetric pool tiles above the diagonal are mirrors.
    """
    if n_pool < 1 or n_test < 0 or tile_size < 1:
        raise ValueError(f"need n_pool >= 1, n_test >= 0, tile_size >= 1; got {n_pool}, {n_test}, {tile_size}")
    n_rows = n_pool + n_test
    tiles = []
    for i, r0 in enumerate(range(0, n_rows, tile_size)):
        rows = (r0, min(r0 + tile_size, n_rows))
        for j, c0 in enumerate(range(0, n_pool, tile_size)):
            cols = (c0, min(c0 + tile_size, n_pool))
            mirror = (j, i) if (j > i and rows[1] <= n_pool) else None
            tiles.append(Tile(i, j, rows, cols, mirror))
    return tiles


def assemble_tiles(tiles: list[Tile], load_tile, out: np.ndarray) -> None:
    """Fill ``out`` (``(N_pool + m) x N_pool``, e.g. a ``.npy`` memory map) from computed tiles.

    ``load_tile(row, col)`` returns the array of a computed tile; mirrored tiles
    are filled with the transpose of the matching block of their computed twin.
    """
    computed = {(t.row, t.col): t for t in tiles if t.mirror is None}
    for t in tiles:
        if t.mirror is None:
            block = load_tile(t.row, t.col)
            shape = (t.rows[1] - t.rows[0], t.cols[1] - t.cols[0])
            if block.shape != shape:
                raise ValueError(f"tile r{t.row}_c{t.col} has shape {block.shape}, expected {shape}")
            out[t.rows[0] : t.rows[1], t.cols[0] : t.cols[1]] = block
    for t in tiles:
        if t.mirror is not None:
            twin = computed[t.mirror]
            block = load_tile(*t.mirror)
            n_r, n_c = t.rows[1] - t.rows[0], t.cols[1] - t.cols[0]
            if (twin.rows[0], twin.cols[0]) != (t.cols[0], t.rows[0]):
                raise ValueError(f"tile r{t.row}_c{t.col} is not the mirror of r{twin.row}_c{twin.col}")
            out[t.rows[0] : t.rows[1], t.cols[0] : t.cols[1]] = block[:n_c, :n_r].T
