"""Reading tabular sources lazily in batches, target validation and data fingerprints.

A *source* is anything :func:`rank_features` accepts: a polars or pandas DataFrame, a 2-D numpy array (columns
named ``x0, x1, ...``), a scipy sparse CSR matrix (with ``feature_names``), or a path, directory or glob of
parquet/CSV/TSV files. :func:`open_source` turns each into a :class:`Source` that yields polars batches with their
global row offset, so the counting code never sees the input type.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sparsearch._frames import is_frame, to_polars
from sparsearch.errors import DataError, closest, first_line

EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_FULL_HASH_LIMIT = 64 * 1024 * 1024  # files up to this many bytes in total are fingerprinted by full content
_SAMPLE_BYTES = 1 << 20
# decoded bytes one parquet batch may hold (besides its ``batch_size`` rows): the buffers of a batch are freshly
# allocated, and their page faults grow faster than their size (2M x 100 int columns: 0.4-0.8 s of system time
# in 500,000-row batches, 2.7-5.6 s in 1,000,000-row ones, for the same 0.2 s more user time)
BATCH_BYTES = 384 << 20


def _is_path_like(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def _resolve_files(source: str | os.PathLike) -> list[Path]:
    """Expand a path, directory or glob into a sorted list of supported files (errors are one line)."""
    text = os.fspath(source)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in _glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"glob {text!r} matched no files; give an existing path, directory or glob")
    else:
        path = Path(text)
        if not path.exists():
            raise DataError(f"data path {text!r} does not exist; give an existing file, directory or glob")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
            if not files:
                raise DataError(
                    f"directory {text!r} holds no parquet, csv or tsv files; allowed extensions: "
                    f"{', '.join(sorted(EXTENSIONS))}"
                )
        else:
            files = [path]
    for f in files:
        if f.suffix.lower() not in EXTENSIONS:
            raise DataError(
                f"unsupported file extension {f.suffix or '(none)'!r} for {str(f)!r}; allowed: "
                f"{', '.join(sorted(EXTENSIONS))}"
            )
        if f.stat().st_size == 0:
            raise DataError(f"file {str(f)!r} is empty (0 bytes); give a file with a header and rows")
    return files


def _csv_header(path: Path, sep: str) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    try:
        text = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"file {str(path)!r} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-encode it as UTF-8") from None
    return [c.strip().strip('"') for c in text.split(sep)]


def _check_duplicates(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]  # set.add: None
    if dups:
        raise DataError(f"{where} has duplicate column names {dups}; column names must be unique")


def _file_schema(path: Path) -> tuple[list[str], int | None]:
    """Column names and row count (None when unknown without reading) of one file; validates it."""
    kind = EXTENSIONS[path.suffix.lower()]
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for corrupt footers
            raise DataError(f"parquet file {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {first_line(exc)})") from None
        names = list(meta.schema_arrow.names)
        _check_duplicates(names, f"parquet file {str(path)!r}")
        if not names:
            raise DataError(f"parquet file {str(path)!r} has no columns")
        return names, meta.metadata.num_rows
    sep = "\t" if kind == "tsv" else ","
    names = _csv_header(path, sep)
    _check_duplicates(names, f"{kind} file {str(path)!r}")
    with open(path, "rb") as fh:
        fh.readline()
        rest = fh.read(4096)
    if not rest.strip():
        raise DataError(f"{kind} file {str(path)!r} has a header but no rows")
    return names, None


def dictionary_columns(schema: Any, columns: list[str] | None) -> list[str]:
    """The string columns (of ``columns``, or all; a polars Categorical is stored as a dictionary of strings) of a
    parquet file's arrow schema: the columns to read dictionary-encoded."""
    import pyarrow as pa

    def is_string(t: Any) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)

    wanted = None if columns is None else set(columns)
    return [f.name for f in schema if (wanted is None or f.name in wanted)
            and (is_string(f.type) or (pa.types.is_dictionary(f.type) and is_string(f.type.value_type)))]


def enum_from_dictionary(name: str, arr: Any) -> pl.Series:
    """A polars ``Enum`` series from an arrow dictionary-encoded (chunked) string array, without decoding rows.

    Each chunk (parquet row group) has its own dictionary; the union of the small dictionaries, sorted, becomes
    the categories, and each chunk's indices are mapped to it through a per-chunk lookup (nulls stay null; a
    value listed twice in a dictionary gets one code). The rows read back exactly as the decoded strings.
    """
    import pyarrow as pa

    chunks = [c for c in (arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]) if len(c)]
    dicts = [pl.Series(c.dictionary).cast(pl.String) for c in chunks]
    if not chunks or any(d.null_count() for d in dicts):  # a null in a dictionary: decode instead (rare)
        return pl.Series(name, arr).cast(pl.String)
    allk = pl.concat(dicts) if len(dicts) > 1 else dicts[0]
    dtype = pl.Enum(allk.unique().sort())
    codes = allk.cast(dtype).to_physical()  # each dictionary entry's code (duplicates share one)
    lut, arrow_type = codes.to_numpy(), codes.to_arrow().type
    out, start = [], 0
    for c, d in zip(chunks, dicts):
        ind = c.indices
        # numpy's take is ~15x faster than pyarrow's here; the values under null slots are unspecified, hence
        # mode="clip", and the chunk's validity bitmap is reused as is
        kind = "i" if pa.types.is_signed_integer(ind.type) else "u"  # (to_pandas_dtype would import pandas)
        raw = np.frombuffer(ind.buffers()[1], dtype=f"{kind}{ind.type.bit_width // 8}", count=ind.offset + len(ind))
        part = lut[start : start + len(d)]
        mapped = np.take(part, raw, mode="clip") if len(part) else np.zeros(len(raw), dtype=lut.dtype)  # all null
        out.append(pa.Array.from_buffers(arrow_type, len(ind), [ind.buffers()[0], pa.py_buffer(mapped)],
                                         null_count=ind.null_count, offset=ind.offset))
        start += len(d)
    phys: pl.Series = pl.from_arrow(pa.chunked_array(out, arrow_type), rechunk=False)  # type: ignore[assignment]  # an array gives a Series
    return phys.cat.to(dtype).rename(name)


def arrow_to_polars(table: Any, dictionary: list[str]) -> pl.DataFrame:
    """A polars frame of an arrow table; the ``dictionary`` columns, if dictionary-encoded, become ``Enum``."""
    import pyarrow as pa

    enc = {n for n in dictionary if n in table.column_names and pa.types.is_dictionary(table.schema.field(n).type)}
    if not enc:
        return pl.from_arrow(table, rechunk=False)  # type: ignore[return-value]  # a table gives a frame
    # no rechunk: each column keeps its row-group chunks (copying a whole batch at once costs page faults)
    return pl.DataFrame([enum_from_dictionary(n, table.column(n)) if n in enc
                         else pl.from_arrow(table.column(n), rechunk=False).rename(n)
                         for n in table.column_names])


def open_parquet(path: Path | str, columns: list[str] | None, dictionary: bool) -> tuple[Any, list[str]]:
    """A ``pyarrow.parquet.ParquetFile`` and the columns it reads dictionary-encoded (``dictionary``: strings).

    ``pre_buffer=False``: pre-buffering coalesces each row group's column chunks into large reads, which pays on
    object stores but not on the local files read here; on a 2M x 100 file its large, short-lived buffers cost
    1-3 s of system time (page faults on fresh huge pages) against 0.1-0.3 s without.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False)
    names = dictionary_columns(pf.schema_arrow, columns) if dictionary else []
    if not names:
        return pf, []
    return pq.ParquetFile(path, metadata=pf.metadata, read_dictionary=names, pre_buffer=False), names


def row_bytes(schema: Any, columns: list[str] | None, dictionary: list[str]) -> int:
    """Estimated decoded bytes per row of ``columns``: fixed widths, 4 for a dictionary code, 32 for a string."""
    wanted = None if columns is None else set(columns)
    total = 0
    for f in schema:
        if wanted is not None and f.name not in wanted:
            continue
        try:
            width = max(1, f.type.bit_width // 8)
        except ValueError:  # variable width
            width = 4 if f.name in dictionary else 32
        total += width
    return max(total, 1)


def iter_parquet(pf: Any, columns: list[str] | None, batch_size: int, row_groups: list[int] | None = None,
                 dictionary: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """Batches of at most ``batch_size`` rows and about :data:`BATCH_BYTES` decoded bytes, of whole row groups.

    Consecutive row groups are read together up to ``batch_size`` rows and ``BATCH_BYTES`` (estimated by
    :func:`row_bytes`; pyarrow's ``iter_batches`` pre-buffers and held 1.8 GB on a 20M-row file; reading row
    groups holds one batch). A row group over 4 x that many rows is streamed in record batches instead.
    ``dictionary``: the columns ``pf`` reads dictionary-encoded (see :func:`open_parquet`); they come as polars
    ``Enum`` columns, so their strings are never decoded per row.
    """
    groups = list(range(pf.metadata.num_row_groups) if row_groups is None else row_groups)
    enc = dictionary or []
    max_rows = min(batch_size, max(1, BATCH_BYTES // row_bytes(pf.schema_arrow, columns, enc)))
    pending: list[int] = []
    pending_rows = 0

    def flush(gs: list[int]) -> Iterator[pl.DataFrame]:
        # one read per row group: reading several at once concatenates each column into a fresh buffer, and
        # the page faults of those buffers cost more system time than the decoding itself
        import pyarrow as pa

        table = arrow_to_polars(pa.concat_tables([pf.read_row_groups([g], columns=columns) for g in gs]), enc)
        for start in range(0, table.height, batch_size):
            yield table.slice(start, batch_size)

    for g in groups:
        rows = pf.metadata.row_group(g).num_rows
        if rows > 4 * max_rows:
            if pending:
                yield from flush(pending)
                pending, pending_rows = [], 0
            for rb in pf.iter_batches(batch_size=max_rows, row_groups=[g], columns=columns):
                yield arrow_to_polars(rb, enc)
            continue
        if pending and pending_rows + rows > max_rows:
            yield from flush(pending)
            pending, pending_rows = [], 0
        pending.append(g)
        pending_rows += rows
    if pending:
        yield from flush(pending)


def iter_file(path: Path, columns: list[str] | None, batch_size: int, dictionary: bool = False) -> Iterator[pl.DataFrame]:
    """Batches of one file; with ``dictionary``, parquet string columns come dictionary-encoded as ``Enum``."""
    kind = EXTENSIONS[path.suffix.lower()]
    if kind == "parquet":
        try:
            pf, enc = open_parquet(path, columns, dictionary)
            yield from iter_parquet(pf, columns, batch_size, dictionary=enc)
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"parquet file {str(path)!r} is truncated or corrupt ({first_line(exc)})") from None
        return
    sep = "\t" if kind == "tsv" else ","
    lf = pl.scan_csv(path, separator=sep, infer_schema_length=10_000)
    if columns is not None:
        lf = lf.select(columns)
    try:
        for df in lf.collect_batches(chunk_size=batch_size):
            if df.height:
                yield df
    except pl.exceptions.ComputeError as exc:
        msg = first_line(exc)
        if "utf-8" in msg.lower() or "utf8" in msg.lower():
            raise DataError(f"file {str(path)!r} is not valid UTF-8 ({msg}); re-encode it as UTF-8") from None
        raise DataError(f"{kind} file {str(path)!r} could not be parsed ({msg})") from None


def _check_columns(columns: Sequence[str] | None, available: Sequence[str], where: str) -> None:
    if columns is None:
        return
    for c in columns:
        if c not in available:
            hint = closest(c, available)
            did = f" (did you mean {hint!r}?)" if hint else ""
            raise DataError(f"column {c!r} not found in {where}{did}; it has {len(available)} columns")


@dataclass
class Source:
    """A uniform view of the input: column names, optional row count, and a batch iterator.

    ``batches(columns, batch_size, dictionary=False)`` yields ``(row offset, frame)``; with ``dictionary``, parquet
    string columns come as polars ``Enum`` columns read dictionary-encoded (for counting code paths that take them).
    """

    columns: list[str]
    n_rows: int | None
    batches: Callable[..., Iterator[tuple[int, pl.DataFrame]]]
    frame: pl.DataFrame | None = None  # set for in-memory sources
    files: list[Path] | None = None  # set for file sources


def _to_polars(data: Any, feature_names: Sequence[str] | None = None) -> pl.DataFrame:
    """Convert an in-memory input (polars, pandas, numpy, scipy sparse) to a polars DataFrame.

    Frames go through :func:`sparsearch._frames.to_polars` (the converter spaces/ and search/ use too); numpy and
    scipy input is converted here, with ``feature_names`` or ``x0, x1, ...`` as column names.
    """
    if is_frame(data):
        return to_polars(data, "data")
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        sp = None
    if sp is not None and sp.issparse(data):
        mat = sp.csc_array(data)
        n_cols = mat.shape[1]
        names = _names(feature_names, n_cols)
        cols = {}
        for j, name in enumerate(names):
            col = np.zeros(mat.shape[0], dtype=mat.dtype)
            start, end = mat.indptr[j], mat.indptr[j + 1]
            col[mat.indices[start:end]] = mat.data[start:end]
            cols[name] = col
        return pl.DataFrame(cols)
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise DataError(f"numpy input must be 2-D (rows x features), got {data.ndim}-D with shape {data.shape}")
        names = _names(feature_names, data.shape[1])
        if data.dtype == object:
            return pl.DataFrame({n: pl.Series(n, list(data[:, j]), strict=False) for j, n in enumerate(names)})
        return pl.DataFrame({n: data[:, j] for j, n in enumerate(names)})
    raise DataError(
        f"unsupported data type {type(data).__name__}; allowed: polars or pandas DataFrame, numpy array, "
        "scipy sparse matrix, or a path/directory/glob of parquet, csv or tsv files"
    )


def _names(feature_names: Sequence[str] | None, n_cols: int) -> list[str]:
    if feature_names is None:
        return [f"x{j}" for j in range(n_cols)]
    names = [str(n) for n in feature_names]
    if len(names) != n_cols:
        raise DataError(f"feature_names has {len(names)} names but the data has {n_cols} columns")
    _check_duplicates(names, "feature_names")
    return names


def open_source(data: Any, *, feature_names: Sequence[str] | None = None) -> Source:
    if _is_path_like(data):
        files = _resolve_files(data)
        columns: list[str] | None = None
        total: int | None = 0
        for f in files:
            names, rows = _file_schema(f)
            if columns is None:
                columns = names
            elif names != columns:
                raise DataError(
                    f"file {str(f)!r} has columns {names[:5]}... but {str(files[0])!r} has {columns[:5]}...; "
                    "all files of one source must share their columns"
                )
            total = None if (total is None or rows is None) else total + rows
        if total == 0:
            raise DataError(f"data {os.fspath(data)!r} has a header but no rows")

        def batches(cols: list[str] | None, batch_size: int, dictionary: bool = False) -> Iterator[tuple[int, pl.DataFrame]]:
            offset = 0
            for f in files:
                for df in iter_file(f, cols, batch_size, dictionary):
                    yield offset, df
                    offset += df.height

        return Source(columns=list(columns or []), n_rows=total, batches=batches, files=files)
    frame = _to_polars(data, feature_names)
    if frame.width == 0:
        raise DataError("data has no columns")
    if frame.height == 0:
        raise DataError("data has no rows")

    def mem_batches(cols: list[str] | None, batch_size: int, dictionary: bool = False) -> Iterator[tuple[int, pl.DataFrame]]:
        view = frame if cols is None else frame.select(cols)
        for start in range(0, view.height, batch_size):
            yield start, view.slice(start, batch_size)

    return Source(columns=list(frame.columns), n_rows=frame.height, batches=mem_batches, frame=frame)


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")


def iter_batches(
    source: Any, *, columns: list[str] | None = None, batch_size: int = 1_000_000
) -> Iterator[pl.DataFrame]:
    """Yield polars DataFrames of at most ``batch_size`` rows from a path, directory or glob (or a frame).

    Parquet is read row-group-wise with pyarrow, CSV/TSV with polars' batched scan, so memory stays bounded.

    Raises:
        DataError: missing path, glob matching nothing, empty file, header only, unsupported extension,
            truncated/corrupt parquet, non-UTF-8 CSV, duplicate column names or an unknown column.

    Example:
        >>> import polars as pl
        >>> [b.height for b in iter_batches(pl.DataFrame({"a": range(5)}), batch_size=2)]
        [2, 2, 1]
    """
    check_batch_size(batch_size)
    src = open_source(source)
    _check_columns(columns, src.columns, "the data")
    for _, df in src.batches(columns, batch_size):
        yield df


def read_table(source: Any, *, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a whole path, directory or glob of parquet/CSV/TSV files into one polars DataFrame.

    Example:
        >>> import polars as pl
        >>> read_table(pl.DataFrame({"a": [1, 2]})).shape
        (2, 1)
    """
    parts = list(iter_batches(source, columns=columns, batch_size=1 << 30))
    if not parts:
        raise DataError(f"data {source!r} has no rows")
    return pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]


def validate_target(df: pl.DataFrame | Any, target: str) -> None:
    """Check that ``target`` exists, is not all null and has at least two values.

    Raises:
        DataError: naming the closest column for a missing target, or the problem with its values.

    Example:
        >>> import polars as pl
        >>> validate_target(pl.DataFrame({"y": [0, 1, 0]}), "y")
    """
    frame = _to_polars(df)
    if target not in frame.columns:
        hint = closest(target, frame.columns)
        did = f" (did you mean {hint!r}?)" if hint else ""
        raise DataError(f"target column {target!r} not found{did}; the data has columns {frame.columns[:8]}")
    col = frame.get_column(target)
    if col.dtype.is_float():
        col = col.fill_nan(None)
    if col.null_count() == col.len():
        raise DataError(f"target column {target!r} is entirely null; it needs at least two distinct values")
    n_unique = col.drop_nulls().n_unique()
    if n_unique < 2:
        raise DataError(
            f"target column {target!r} has one class only ({col.drop_nulls()[0]!r}); it needs at least two distinct values"
        )


def _hash_file_sample(h: Any, path: Path, size: int, full: bool) -> None:
    with open(path, "rb") as fh:
        if full:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
            return
        h.update(fh.read(_SAMPLE_BYTES))
        fh.seek(max(0, size - _SAMPLE_BYTES))
        h.update(fh.read(_SAMPLE_BYTES))


def data_fingerprint(data: Any, *, feature_names: Sequence[str] | None = None) -> str:
    """A 16-hex-character fingerprint of the data's content, for caching rankings and prefilters.

    In-memory data is hashed by column names, dtypes and every value (polars row hashes). Files are hashed by
    their names, sizes and full content when they total at most 64 MiB; larger sources by names, sizes,
    modification times and the first and last MiB of each file (a parquet footer holds its row-group statistics),
    so fingerprinting a large file stays cheap.

    Example:
        >>> import polars as pl
        >>> a = data_fingerprint(pl.DataFrame({"a": [1, 2]}))
        >>> len(a), a == data_fingerprint(pl.DataFrame({"a": [1, 3]}))
        (16, False)
    """
    h = hashlib.blake2b(digest_size=8)
    if _is_path_like(data):
        files = _resolve_files(data)
        sizes = [f.stat().st_size for f in files]
        full = sum(sizes) <= _FULL_HASH_LIMIT
        h.update(b"files" if full else b"files-sampled")
        for f, size in zip(files, sizes):
            h.update(f.name.encode() + b"\0" + str(size).encode())
            if not full:
                h.update(str(f.stat().st_mtime_ns).encode())
            _hash_file_sample(h, f, size, full)
        return h.hexdigest()
    frame = _to_polars(data, feature_names)
    h.update(repr([(c, str(t)) for c, t in frame.schema.items()]).encode())
    h.update(str(frame.height).encode())
    if frame.width and frame.height:
        h.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    return h.hexdigest()
