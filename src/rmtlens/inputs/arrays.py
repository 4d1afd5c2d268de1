"""Datasets and representations given as array files (SPEC §1): class labels or
real-valued targets, an optional pool/test split, and embeddings computed elsewhere.

An *array file* is named by a spec ``{"file", "key", "columns", "sha256"}`` (the
config's ``datasets.<name>.labels``, ``.targets``, ``.split`` and
``.representations.<name>``). Formats, by suffix:

``.npy``
    the array itself (no pickled objects).
``.npz``, ``.safetensors``
    the array named ``key``, or the only one the file holds.
``.parquet``
    ``key``: one column (scalar values: a 1-d array; fixed-length lists: a 2-d
    array); ``columns``: these scalar columns as the columns of a 2-d array;
    neither: every column.

Checks come in two steps. :func:`array_file_header` reads shape and dtype only
(no values), cheap enough to run on every file before any job
(:func:`rmtlens.workflow.check_file_representations`); :func:`read_array_file`
verifies the sha256 and reads the values, and the ``check_*`` functions reject
what would make the numbers wrong (NaN or infinite values, labels that are not
classes). Every error is an :class:`ArrayFileError` naming the file and the
problem.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmtlens.inputs.archives import DatasetError, sha256_of

ARRAY_SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet")
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
SPLIT_NAMES = {"pool": False, "train": False, "test": True}

# safetensors dtype names and the numpy dtypes they hold (bfloat16 and float8 have none)
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
    "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}


class ArrayFileError(DatasetError):
    """An array file is missing, unreadable, or holds an array unfit for its role."""


@dataclass(frozen=True)
class ArrayHeader:
    """What an array file holds, read without its values.

    path : the file.
    shape : the array's shape (Parquet: ``(rows,)`` for one scalar column, else
        ``(rows, columns)``; a list column's length is read from its first row).
    dtype : numpy dtype of the values (``<U`` for strings, ``object`` when numpy has none).
    columns : the selected column names (Parquet), else None.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    columns: tuple[str, ...] | None = None


def _error(path, problem: str) -> ArrayFileError:
    return ArrayFileError(f"{path}: {problem}")


def _suffix(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise _error(path, f"unknown array format {suffix or '(no suffix)'!r}; expected one of {ARRAY_SUFFIXES}")
    return suffix


def _exists(path) -> None:
    if not Path(path).is_file():
        raise _error(path, "file does not exist")


def _one_name(path, names, key, what: str) -> str:
    names = list(names)
    if key is not None:
        if key not in names:
            raise _error(path, f"has no {what} {key!r}; it holds {names}")
        return key
    if len(names) != 1:
        raise _error(path, f"holds {len(names)} {what}s {names}: name one with `key`")
    return names[0]


def _npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:  # 2.0 and 3.0 share the layout; 3.0 only allows utf-8 field names
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npz_member(path, key) -> str:
    with zipfile.ZipFile(path) as archive:
        names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    return _one_name(path, names, key, "array")


def _arrow_dtype(path, field) -> np.dtype:
    import pyarrow as pa

    kind = field.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.dtype(str)
    try:
        return np.dtype(kind.to_pandas_dtype())
    except (NotImplementedError, TypeError):
        return np.dtype(object)


def _parquet_selection(path, key, columns):
    """(column names, list column or None) selected from a Parquet file's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    names = list(schema.names)
    if key is not None and columns is not None:
        raise _error(path, "give `key` (one column) or `columns`, not both")
    if key is not None:
        name = _one_name(path, names, key, "column")
        kind = schema.field(name).type
        list_column = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        return [name], (name if list_column else None)
    chosen = list(columns) if columns is not None else names
    missing = [c for c in chosen if c not in names]
    if missing:
        raise _error(path, f"has no columns {missing}; it holds {names}")
    if not chosen:
        raise _error(path, "no columns selected")
    return chosen, None


def array_file_header(path, key: str | None = None, columns=None) -> ArrayHeader:
    """Shape and dtype of the array a spec names, without reading its values (Parquet
    list columns: the first row's length). Raises :class:`ArrayFileError` when the file
    is missing, in an unknown format, unreadable or without the named array."""
    _exists(path)
    suffix = _suffix(path)
    if columns is not None and suffix != ".parquet":
        raise _error(path, "`columns` applies to Parquet files only")
    try:
        if suffix == ".npy":
            with open(path, "rb") as handle:
                shape, dtype = _npy_header(handle)
            return ArrayHeader(str(path), shape, dtype)
        if suffix == ".npz":
            member = _npz_member(path, key)
            with zipfile.ZipFile(path) as archive, archive.open(member + ".npy") as handle:
                shape, dtype = _npy_header(handle)
            return ArrayHeader(str(path), shape, dtype)
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "np") as handle:
                name = _one_name(path, handle.keys(), key, "tensor")
                piece = handle.get_slice(name)
                shape, kind = tuple(int(s) for s in piece.get_shape()), piece.get_dtype()
            if kind not in _SAFETENSORS_DTYPES:
                raise _error(path, f"tensor {name!r} has dtype {kind}, which numpy cannot hold; save it as float32")
            return ArrayHeader(str(path), shape, np.dtype(_SAFETENSORS_DTYPES[kind]))
        import pyarrow.parquet as pq

        names, list_column = _parquet_selection(path, key, columns)
        meta = pq.ParquetFile(path)
        rows = int(meta.metadata.num_rows)
        schema = meta.schema_arrow
        if list_column is not None:
            field = schema.field(list_column)
            width = field.type.list_size if hasattr(field.type, "list_size") else None
            if width is None:  # variable-length lists: the first row's length
                first = meta.read_row_group(0, columns=[list_column]).column(0)[0].as_py() if rows else []
                width = len(first or [])
            return ArrayHeader(str(path), (rows, int(width)), _arrow_dtype(path, field.type.value_field),
                               tuple(names))
        dtypes = {_arrow_dtype(path, schema.field(n)) for n in names}
        dtype = dtypes.pop() if len(dtypes) == 1 else np.result_type(*dtypes) if all(
            d.kind in NUMERIC_KINDS for d in dtypes) else np.dtype(object)
        shape = (rows,) if key is not None else (rows, len(names))
        return ArrayHeader(str(path), shape, dtype, tuple(names))
    except ArrayFileError:
        raise
    except Exception as err:  # a truncated or foreign file: say which and why
        raise _error(path, f"cannot read it as {suffix}: {type(err).__name__}: {err}") from err


def read_array_file(path, key: str | None = None, columns=None, sha256: str | None = None) -> np.ndarray:
    """The array a spec names, all values read (after its sha256 is verified when given).

    Returns the array as stored (Parquet: scalar columns stacked as columns, a list
    column as rows). Raises :class:`ArrayFileError` naming the file on a checksum
    mismatch, a pickled (object) ``.npy``, ragged Parquet lists or an unreadable file.
    """
    header = array_file_header(path, key, columns)  # existence, format and name checks
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            raise _error(path, f"checksum mismatch: expected sha256 {sha256}, got {actual}. The file changed or is "
                               "a different one; replace it or update the sha256 in the config")
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return archive[_npz_member(path, key)]
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "np") as handle:
                return handle.get_tensor(_one_name(path, handle.keys(), key, "tensor"))
        import pyarrow.parquet as pq

        names, list_column = _parquet_selection(path, key, columns)
        table = pq.read_table(path, columns=names)
        if list_column is not None:
            rows = table.column(0).to_pylist()
            widths = {len(r) if r is not None else -1 for r in rows}
            if len(widths) > 1 or -1 in widths:
                raise _error(path, f"list column {list_column!r} has rows of different lengths or missing rows; "
                                   "every row needs the same number of values")
            return np.asarray(rows, dtype=header.dtype if header.dtype.kind in NUMERIC_KINDS else None)
        arrays = [table.column(n).to_numpy(zero_copy_only=False) for n in names]
        return arrays[0] if key is not None else np.stack(arrays, axis=1)
    except ArrayFileError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise _error(path, "holds Python objects (dtype object); save numbers or fixed-width strings "
                               "(numpy '<U') instead") from err
        raise _error(path, f"cannot read it: {err}") from err
    except Exception as err:
        raise _error(path, f"cannot read it: {type(err).__name__}: {err}") from err


def _kind(dtype: np.dtype) -> str:
    return "string" if dtype.kind in "US" else "numeric" if dtype.kind in NUMERIC_KINDS else "other"


def check_embeddings_header(header: ArrayHeader, n_rows: int | None = None) -> None:
    """Raise :class:`ArrayFileError` unless the header is that of a numeric 2-d, non-empty
    ``(N, p)`` array with ``n_rows`` rows (when given: the dataset's samples)."""
    path, shape = header.path, header.shape
    if _kind(header.dtype) != "numeric":
        raise _error(path, f"embeddings must be numeric, got dtype {header.dtype}")
    if len(shape) != 2:
        hint = ("one value per sample: embeddings need a row of p >= 1 values per sample, shape (N, p)"
                if len(shape) == 1 else "flatten or pool each sample's values to one row, shape (N, p)")
        raise _error(path, f"embeddings are {len(shape)}-d with shape {shape}; {hint}")
    if shape[0] == 0 or shape[1] == 0:
        raise _error(path, f"embeddings are empty, shape {shape}")
    if n_rows is not None and shape[0] != n_rows:
        raise _error(path, f"has {shape[0]} rows, but the dataset has {n_rows} samples (rows of its labels or "
                           "targets): row i of every file must be sample i")


def _vector_shape(header: ArrayHeader, what: str) -> int:
    shape = header.shape
    if len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]
    if len(shape) != 1:
        raise _error(header.path, f"{what} must be 1-d, one value per sample, got shape {header.shape}")
    if shape[0] == 0:
        raise _error(header.path, f"{what} are empty")
    return shape[0]


def check_labels_header(header: ArrayHeader) -> int:
    """Rows of a class-label file: 1-d (or one column) of integers or strings; else raise."""
    if header.dtype.kind not in "iuUS":
        raise _error(header.path, f"labels must be integers or strings, got dtype {header.dtype}; for real-valued "
                                  "targets give the file as `targets:` with targets.kind: regression")
    return _vector_shape(header, "labels")


def check_targets_header(header: ArrayHeader) -> int:
    """Rows of a real-valued target file: numeric, (N,) or (N, C) with C >= 1; else raise."""
    if _kind(header.dtype) != "numeric":
        raise _error(header.path, f"targets must be numeric, got dtype {header.dtype}")
    shape = header.shape
    if len(shape) not in (1, 2) or shape[0] == 0 or (len(shape) == 2 and shape[1] == 0):
        raise _error(header.path, f"targets must be a non-empty (N,) or (N, C) array, got shape {shape}")
    return shape[0]


def check_split_header(header: ArrayHeader, n_rows: int) -> None:
    """A split file: one value per sample (bool, 0/1 or 'pool'/'train'/'test'); else raise."""
    if header.dtype.kind not in "biuUS":
        raise _error(header.path, f"split must be bool, 0/1 or 'pool'/'test' strings, got dtype {header.dtype}")
    rows = _vector_shape(header, "split")
    if rows != n_rows:
        raise _error(header.path, f"has {rows} rows, but the dataset has {n_rows} samples")


def check_finite(values: np.ndarray, path, what: str) -> None:
    """Raise :class:`ArrayFileError` naming how many values are NaN or infinite and the first row."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
        raise _error(path, f"{what} contain {int(bad.sum())} NaN or infinite values in {rows.size} rows "
                           f"(first at row {int(rows[0])})")


def split_is_test(split: np.ndarray, path) -> np.ndarray:
    """``True`` for test rows of a split array (bool, 0/1, or 'pool'/'train'/'test')."""
    split = np.asarray(split).reshape(len(split))
    if split.dtype.kind == "b":
        return split.copy()
    if split.dtype.kind in "iu":
        odd = sorted(set(np.unique(split).tolist()) - {0, 1})
        if odd:
            raise _error(path, f"split values must be 0 (pool) or 1 (test), got {odd[:5]}")
        return split == 1
    if split.dtype.kind in "US":
        names = np.char.lower(split.astype(str))
        odd = sorted(set(np.unique(names).tolist()) - set(SPLIT_NAMES))
        if odd:
            raise _error(path, f"split values must be 'pool' (or 'train') and 'test', got {odd[:5]}")
        return names == "test"
    raise _error(path, f"split must be bool, 0/1 or 'pool'/'test' strings, got dtype {split.dtype}")


def split_counts(split: np.ndarray, path) -> tuple[int, int]:
    """(pool rows, test rows) of a split array; raise if either is empty."""
    is_test = split_is_test(split, path)
    n_test = int(is_test.sum())
    n_train = int(is_test.size - n_test)
    for count, name in ((n_train, "pool"), (n_test, "test")):
        if count == 0:
            raise _error(path, f"the split leaves the {name} set empty (all {is_test.size} rows are "
                               f"{'test' if name == 'pool' else 'pool'} rows)")
    return n_train, n_test


def class_labels(values: np.ndarray, path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer class indices ``(N,)`` and class names from a label array.

    Integers must be ``>= 0`` (classes ``0..max``, named by their number); strings
    become indices into their sorted distinct values.
    """
    values = np.asarray(values).reshape(len(values))
    if values.dtype.kind in "iu":
        if values.min() < 0:
            raise _error(path, f"labels must be >= 0 (class indices), got {int(values.min())}")
        n_classes = int(values.max()) + 1
        return values.astype(np.int64), tuple(str(c) for c in range(n_classes))
    if values.dtype.kind in "US":
        classes, index = np.unique(values.astype(str), return_inverse=True)
        return index.astype(np.int64), tuple(str(c) for c in classes)
    raise _error(path, f"labels must be integers or strings, got dtype {values.dtype}")


def embedding_rows(values: np.ndarray, path, file_rows: np.ndarray, n_rows: int) -> np.ndarray:
    """The dataset's rows of an embeddings array, pool rows first (``file_rows`` order).

    Validates the values (numeric 2-d, ``n_rows`` rows, finite) and returns float32
    when stored as float32, else float64 (integers, bool and float16 are widened).
    """
    values = np.asarray(values)
    check_embeddings_header(ArrayHeader(str(path), values.shape, values.dtype), n_rows)
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    rows = np.asarray(values[np.asarray(file_rows)], dtype=dtype)
    check_finite(values, path, "embeddings")
    return rows



def _target_names(header: ArrayHeader, key: str | None, n_columns: int) -> tuple[str, ...]:
    if header.columns is not None and len(header.columns) == n_columns:
        return header.columns
    if key is not None and n_columns == 1:
        return (key,)
    return tuple(f"y{j}" for j in range(n_columns))


def check_array_dataset_files(spec: dict) -> dict[str, int]:
    """Header checks of every file of a dataset given as arrays, before any job reads it.

    Parameters
    ----------
    spec : the dataset's config entry: ``labels`` or ``targets``, optional ``split``,
        ``representations`` (name -> array-file spec), ``n_pool``, ``n_test``.

    Returns ``{"rows": N, "pool_rows": ..., "test_rows": ...}`` (the rows that pool and
    test are drawn from: the split's, or all N for the seeded split). Raises
    :class:`ArrayFileError` naming the file and the problem: a missing or unreadable
    file, a 1-d, empty or non-numeric embedding array, rows that do not match the
    labels, a split that leaves the pool or test set empty, or ``n_pool``/``n_test``
    larger than the rows they are drawn from. Reads shapes and dtypes only, except the
    split (one value per sample), whose counts need its values.
    """
    if (spec.get("labels") is None) == (spec.get("targets") is None):
        raise DatasetError("a dataset given as arrays needs exactly one of `labels` (classes) or `targets` "
                           "(real values)")
    which = "labels" if spec.get("labels") is not None else "targets"
    outcome = spec[which]
    header = array_file_header(outcome["file"], outcome.get("key"), outcome.get("columns"))
    rows = check_labels_header(header) if which == "labels" else check_targets_header(header)
    split = spec.get("split")
    if split is not None:
        split_header = array_file_header(split["file"], split.get("key"), split.get("columns"))
        check_split_header(split_header, rows)
        pool_rows, test_rows = split_counts(
            read_array_file(split["file"], split.get("key"), split.get("columns")), split["file"])
        for count, available, name in ((spec["n_pool"], pool_rows, "pool"), (spec["n_test"], test_rows, "test")):
            if count > available:
                raise _error(split["file"], f"n_{name} = {count} exceeds the {available} {name} rows of the split")
    else:
        pool_rows = test_rows = rows
        if spec["n_pool"] + spec["n_test"] > rows:
            raise _error(outcome["file"], f"n_pool + n_test = {spec['n_pool'] + spec['n_test']} exceeds its {rows} "
                                          "samples")
    for rep in (spec.get("representations") or {}).values():
        check_embeddings_header(array_file_header(rep["file"], rep.get("key"), rep.get("columns")), rows)
    return {"rows": rows, "pool_rows": pool_rows, "test_rows": test_rows}


def prepare_array_dataset(spec: dict, outcome_path=None, split_path=None):
    """The pool and test set of a dataset given as arrays (config ``source: arrays``).

    Parameters
    ----------
    spec : the dataset's config entry: ``labels`` (class labels) or ``targets``
        (real-valued, (N,) or (N, C)) as array-file specs, optional ``split`` (one
        value per sample: True, 1 or 'test' for test rows), ``n_pool``, ``n_test``, ``seed``.
    outcome_path, split_path : the files to read (default: the specs' ``file``).

    Returns a :class:`rmtlens.inputs.datasets.PreparedDataset` without images: with a
    split, ``n_pool`` pool rows and ``n_test`` test rows are drawn from the split's
    (seeded, sorted, as for images with a test split); without one, disjoint seeded
    draws from all rows (as for digits). ``file_rows`` maps each sample to its row in
    the files, pool rows first. Values are checked here: labels must be classes,
    targets finite, the split must leave both sets non-empty.
    """
    from rmtlens.inputs.datasets import PreparedDataset, choose_pool_and_test

    which = "labels" if spec.get("labels") is not None else "targets"
    outcome = spec[which]
    path = outcome_path or outcome["file"]
    raw = read_array_file(path, outcome.get("key"), outcome.get("columns"), outcome.get("sha256"))
    columns = array_file_header(path, outcome.get("key"), outcome.get("columns")).columns
    header = ArrayHeader(str(path), raw.shape, raw.dtype, columns)
    labels = values = None
    if which == "labels":
        rows = check_labels_header(header)
        labels, classes = class_labels(raw, path)
    else:
        rows = check_targets_header(header)
        values = np.asarray(raw, dtype=np.float64).reshape(rows, -1)
        check_finite(values, path, "targets")
        classes = _target_names(header, outcome.get("key"), values.shape[1])
    n_pool, n_test, seed = int(spec["n_pool"]), int(spec["n_test"]), int(spec.get("seed", 0))
    split = spec.get("split")
    try:
        if split is not None:
            split_file = split_path or split["file"]
            marks = read_array_file(split_file, split.get("key"), split.get("columns"), split.get("sha256"))
            check_split_header(ArrayHeader(str(split_file), marks.shape, marks.dtype), rows)
            split_counts(marks, split_file)
            is_test = split_is_test(marks, split_file)
            train_rows, test_rows = np.flatnonzero(~is_test), np.flatnonzero(is_test)
            pool, test = choose_pool_and_test(train_rows.size, test_rows.size, n_pool, n_test, seed)
            file_rows = np.concatenate([train_rows[pool], test_rows[test]])
        else:
            pool, test = choose_pool_and_test(rows, None, n_pool, n_test, seed)
            file_rows = np.concatenate([pool, test])
    except ArrayFileError:
        raise
    except DatasetError as err:
        raise _error(split_path or (split or {}).get("file") or path, str(err)) from err
    return PreparedDataset(
        images=None,
        labels=None if labels is None else labels[file_rows],
        source_index=np.concatenate([pool, test]),
        classes=classes,
        n_pool=n_pool,
        values=None if values is None else values[file_rows],
        file_rows=file_rows.astype(np.int64),
        file_row_count=rows,
    )


def import_representation(path, spec: dict, dataset) -> np.ndarray:
    """A representation's embeddings in the dataset's row order (pool rows, then test).

    Parameters
    ----------
    path : the embeddings file.
    spec : its array-file spec (``key``, ``columns``, ``sha256``).
    dataset : the :class:`rmtlens.inputs.datasets.PreparedDataset` of a dataset given as
        arrays (its ``file_rows`` and ``file_row_count``).

    Returns ``(n_pool + n_test, p)`` float32 (when stored so) or float64. Raises
    :class:`ArrayFileError` naming the file: checksum mismatch, not a numeric 2-d
    array, rows that do not match the dataset's samples, NaN or infinite values.
    """
    if dataset.file_rows is None:
        raise ValueError("representations from files need a dataset given as arrays (source: arrays)")
    values = read_array_file(path, spec.get("key"), spec.get("columns"), spec.get("sha256"))
    return embedding_rows(values, path, dataset.file_rows, dataset.file_row_count)
