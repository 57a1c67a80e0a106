"""Reading delimited interaction tables fast, with errors that name the bad line.

The fast path is one vectorised ``np.loadtxt`` call (C parser, ~2-3 M rows/s here). When
it fails -- a stray string, a short row, a NaN rating -- we re-read the file with a plain
Python scanner whose only job is to find the FIRST bad line and say what is wrong with it
(``DataError("ratings.csv:17", "column 'rating': 'abc' is not a number")``). Files whose
id columns are not integers (RecBole tokens such as ``A1B2C3``) also take the scanner path;
their ids stay strings.

Blank lines are skipped by both paths; line numbers in messages are 1-based lines of the
file as a text editor shows them (header included).

Ids are tokens. Two ids are the same user/item exactly when their text (stripped of
surrounding whitespace) is the same, whatever the other rows hold: "001" and "1" are
two ids, in every file. A column whose every token is a canonical decimal integer (no
sign but '-', no leading zeros, within int64: ``0|-?[1-9][0-9]*``) is stored as int64 --
only so that it sorts numerically; canonical text and integer map one to one, so this
changes no identity. Any other token (``001``, ``+5``, ``1e3``, ``A1B2``, an integer
beyond int64) makes the column a column of strings, and a canonical integer in it is the
same id as that integer in an all-integer file (``str(1) == "1"``).

Files are read as UTF-8 text; a gzip-compressed file is decompressed on the fly, other
compressed formats and undecodable bytes are a one-line DataError naming the file (and
the line, for bad bytes).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import re
import warnings
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from mmrec_jax.errors import DataError

# Kinds of column: 'id' (int64 when every value is an integer, else str), 'int' (int64),
# 'float' (float64, must be finite), 'str' (kept as str), 'skip' (read, not returned).
KINDS = ("id", "int", "float", "str", "skip")

TextOpener = Callable[[], io.TextIOBase]


@dataclasses.dataclass(frozen=True)
class Column:
  name: str
  kind: str


def opener_for_bytes(data: bytes, encoding: str = "utf-8") -> TextOpener:
  """A re-openable text stream over bytes (zip members, pre-processed '::' files)."""
  return lambda: io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="")


# Magic bytes of compressed formats: gzip is read transparently, the others are named.
_GZIP = b"\x1f\x8b"
_OTHER_COMPRESSION = (
  (b"PK\x03\x04", "zip", "unzip"),
  (b"BZh", "bzip2", "bunzip2"),
  (b"\xfd7zXZ\x00", "xz", "unxz"),
  (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
)


def opener_for_path(path, encoding: str = "utf-8") -> TextOpener:
  """A re-openable text stream over a file; gzip files are decompressed on the fly."""

  def opener():
    try:
      with open(path, "rb") as f:
        magic = f.read(6)
    except IsADirectoryError:
      raise DataError(str(path), "is a directory, expected a file") from None
    except OSError as e:
      raise DataError(str(path), f"cannot be read ({e.strerror or type(e).__name__})") from None
    if magic.startswith(_GZIP):
      return io.TextIOWrapper(_CheckedGzip(path), encoding=encoding, newline="")
    for head, kind, tool in _OTHER_COMPRESSION:
      if magic.startswith(head):
        article = "an" if kind[0] in "aeioux" else "a"
        raise DataError(
          str(path),
          f"is {article} {kind}-compressed file; decompress it first "
          f"({tool} {path}) or give a plain-text file",
        )
    return open(path, encoding=encoding, newline="")

  return opener


class _CheckedGzip(gzip.GzipFile):
  """GzipFile whose corruption errors (truncated stream, bad CRC) name the file."""

  def __init__(self, path):
    super().__init__(filename=path, mode="rb")
    self._where = str(path)

  def read(self, *args):
    try:
      return super().read(*args)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(self._where, f"gzip data is corrupt or truncated ({e})") from None

  def read1(self, *args):
    try:
      return super().read1(*args)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(self._where, f"gzip data is corrupt or truncated ({e})") from None

  def readline(self, *args):
    try:
      return super().readline(*args)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(self._where, f"gzip data is corrupt or truncated ({e})") from None


def decode_error(opener: TextOpener, where: str, error: UnicodeDecodeError) -> DataError:
  """A DataError naming the first line of ``where`` that is not valid text."""
  try:
    with opener() as f:
      raw = getattr(f, "buffer", None)
      if raw is not None:
        for lineno, line in enumerate(raw, 1):
          try:
            line.decode(error.encoding)
          except UnicodeDecodeError as e:
            bad = e.object[e.start : e.start + 4]
            return DataError(
              f"{where}:{lineno}",
              f"not {error.encoding} text (bytes {bad!r} "
              f"at column {e.start + 1}); save the file as UTF-8",
            )
  except (OSError, DataError):
    pass
  return DataError(where, f"not {error.encoding} text ({error.reason}); save the file as UTF-8")


def canonical_int(token: str) -> bool:
  """True for canonical decimal integers within int64 (the module docstring's rule)."""
  return bool(_CANONICAL.fullmatch(token)) and _INT64_MIN <= int(token) <= _INT64_MAX


_CANONICAL = re.compile(r"0|-?[1-9][0-9]*")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def read_header(opener: TextOpener, where: str, delimiter: str) -> list[str]:
  """First non-blank line split on the delimiter, stripped. DataError if the file is empty."""
  try:
    with opener() as f:
      for line in f:
        line = line.rstrip("\r\n")
        if line.strip():
          return [c.strip() for c in line.split(delimiter)]
  except UnicodeDecodeError as e:
    raise decode_error(opener, where, e) from None
  raise DataError(where, "file is empty (no header and no rows)")


def read_columns(
  opener: TextOpener,
  *,
  where: str,
  delimiter: str,
  columns: Sequence[Column],
  skip_lines: int = 0,
  quoted: bool = False,
) -> dict[str, np.ndarray]:
  """Reads every row; the file must have exactly ``len(columns)`` fields per row.

  Args:
    opener: returns a fresh text stream each call (the scanner re-reads on failure).
    where: file name used in messages.
    delimiter: one character.
    columns: one entry per field, in file order.
    skip_lines: header lines to skip (counted in the reported line numbers).
    quoted: honour CSV double quotes (movies.csv titles contain commas).

  Returns:
    name -> array for every column whose kind is not 'skip'.
  """
  for c in columns:
    if c.kind not in KINDS:
      raise ValueError(f"column kind {c.kind!r} is not one of {KINDS}")
  try:
    fast_ok = all(c.kind in ("id", "int", "float", "skip") for c in columns)
    if fast_ok:
      out = _fast(opener, where, delimiter, columns, skip_lines, quoted)
      if out is not None:
        return out
    return _scan(opener, where, delimiter, columns, skip_lines, quoted)
  except UnicodeDecodeError as e:
    raise decode_error(opener, where, e) from None


def _noncanonical_int_tokens(opener: TextOpener, delimiter: str) -> bool:
  """True if any field of the file looks like an integer written non-canonically.

  np.loadtxt reads "001", "+1" and "-0" as integers, which would merge them with "1" and
  "0"; such files go to the scanner, which keeps them as the distinct tokens they are.
  A false alarm (a rating "+3", a zero-padded timestamp) only costs the slower path.
  """
  d = re.escape(delimiter)
  pattern = re.compile(rf"(?:^|{d})[ \t]*(?:\+|-?0[0-9]|-0(?=[ \t]*(?:{d}|\r?$)))", re.M)
  with opener() as f:
    tail = ""
    while chunk := f.read(1 << 22):
      text = tail + chunk
      cut = text.rfind("\n") + 1
      if pattern.search(text, 0, cut if cut else len(text)):
        return True
      tail = text[cut:]
    return bool(tail and pattern.search(tail))


def _fast(opener, where, delimiter, columns, skip_lines, quoted):
  dtype = [(f"c{j}", "i8" if c.kind in ("id", "int") else "f8") for j, c in enumerate(columns)]
  try:
    with opener() as f, warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
      arr = np.loadtxt(
        f,
        delimiter=delimiter,
        dtype=dtype,
        comments=None,
        ndmin=1,
        skiprows=skip_lines,
        quotechar='"' if quoted else None,
      )
  except (ValueError, IndexError, OverflowError):
    return None  # the scanner finds and names the bad line (or reads string ids)
  if arr.shape[0] == 0:
    raise DataError(where, "file has no data rows")
  if any(c.kind == "id" for c in columns) and _noncanonical_int_tokens(opener, delimiter):
    return None  # "001" vs "1": the scanner keeps tokens apart
  out = {}
  for j, c in enumerate(columns):
    if c.kind == "skip":
      continue
    col = arr[f"c{j}"]
    if c.kind == "float" and not np.isfinite(col).all():
      return None
    out[c.name] = np.ascontiguousarray(col)
  return out


def _scan(opener, where, delimiter, columns, skip_lines, quoted):
  """Line-by-line reader: exact messages for the first bad line; string ids allowed."""
  n = len(columns)
  values = [[] for _ in columns]
  ints = [c.kind == "id" for c in columns]  # id columns stay int while every value is one
  with opener() as f:
    if quoted:
      reader = csv.reader(f, delimiter=delimiter)
      rows = ((reader.line_num, r) for r in reader)
    else:
      rows = ((i, line.rstrip("\r\n").split(delimiter)) for i, line in enumerate(f, 1))
    for lineno, fields in rows:
      if lineno <= skip_lines:
        continue
      if not fields or (len(fields) == 1 and not fields[0].strip()):
        continue  # blank line
      if len(fields) != n:
        raise DataError(
          f"{where}:{lineno}",
          f"expected {n} columns ({', '.join(c.name for c in columns)}), found {len(fields)}",
        )
      for j, (c, raw) in enumerate(zip(columns, fields)):
        if c.kind == "skip":
          continue
        v = raw.strip()
        if c.kind == "float":
          try:
            x = float(v)
          except ValueError:
            raise DataError(
              f"{where}:{lineno}", f"column '{c.name}': {v!r} is not a number"
            ) from None
          if not math.isfinite(x):
            raise DataError(f"{where}:{lineno}", f"column '{c.name}': {v!r} is not a finite number")
          values[j].append(x)
        elif c.kind == "int":
          try:
            x = int(v)
          except ValueError:
            raise DataError(
              f"{where}:{lineno}", f"column '{c.name}': {v!r} is not an integer"
            ) from None
          if not _INT64_MIN <= x <= _INT64_MAX:
            raise DataError(
              f"{where}:{lineno}", f"column '{c.name}': {v} does not fit in a 64-bit integer"
            )
          values[j].append(x)
        else:
          if not v:
            raise DataError(f"{where}:{lineno}", f"column '{c.name}' is empty")
          if ints[j] and not canonical_int(v):
            ints[j] = False
          values[j].append(v)
  if not values[0] and not any(values):
    raise DataError(where, "file has no data rows")
  out = {}
  for j, c in enumerate(columns):
    if c.kind == "skip":
      continue
    if c.kind == "float":
      out[c.name] = np.asarray(values[j], dtype=np.float64)
    elif c.kind == "int" or (c.kind == "id" and ints[j]):
      out[c.name] = np.asarray([int(v) for v in values[j]], dtype=np.int64)
    else:
      out[c.name] = np.asarray(values[j], dtype=str)
  if not len(next(iter(out.values()))):
    raise DataError(where, "file has no data rows")
  return out


def line_of_row(opener: TextOpener, row: int, skip_lines: int) -> int:
  """1-based file line of data row ``row`` (0-based, blank lines not counted)."""
  seen = -1
  with opener() as f:
    for lineno, line in enumerate(f, 1):
      if lineno <= skip_lines or not line.strip():
        continue
      seen += 1
      if seen == row:
        return lineno
  return -1
