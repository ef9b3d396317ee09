"""The two CSVs of a mixture experiment, laid out like RegMix's public data.

ratios.csv: first column the run id, then one column per source (normalized shares).
metrics.csv: first column the run id, then one column per metric (bpb/<source>, loss/mix, ...).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MixcError
from ..store import write_atomic


@dataclass(frozen=True)
class Table:
    path: str
    ids: list[str]
    columns: list[str]
    values: np.ndarray  # rows x columns, float64; NaN where a cell is empty

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise MixcError(f"{self.path}: no column '{name}' (columns: {', '.join(self.columns[:8])}{', ...' if len(self.columns) > 8 else ''})")
        return self.values[:, self.columns.index(name)]

    def select(self, names: list[str]) -> np.ndarray:
        """The columns `names` in that order (matched by name, never by position)."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise MixcError(f"{self.path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        return self.values[:, [self.columns.index(n) for n in names]]

    def rows_for(self, ids: list[str]) -> np.ndarray:
        """Row indices of `ids`, so that two files are joined on the run id, not on row order."""
        where = {run: i for i, run in enumerate(self.ids)}
        missing = [run for run in ids if run not in where]
        if missing:
            raise MixcError(f"{self.path}: no row for run id{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])}")
        return np.array([where[run] for run in ids], dtype=int)


def read_table(path: str | Path) -> Table:
    """A CSV of run id + numeric columns; a bad cell is reported with its file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MixcError(f"{path}: no such file") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise MixcError(f"{path}: empty file (expected a header: run id, then one column per source or metric)")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise MixcError(f"{path}:1: a header needs the run id column and at least one more")
    columns = header[1:]
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise MixcError(f"{path}:1: column '{dup}' appears twice")
    ids: list[str] = []
    values: list[list[float]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise MixcError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
        run = row[0].strip()
        if run in ids:
            raise MixcError(f"{path}:{line}: run id '{run}' appears twice")
        cells = []
        for name, cell in zip(columns, row[1:]):
            cell = cell.strip()
            if not cell:
                cells.append(math.nan)
                continue
            try:
                cells.append(float(cell))
            except ValueError:
                raise MixcError(f"{path}:{line}: column '{name}': '{cell}' is not a number") from None
        ids.append(run)
        values.append(cells)
    if not ids:
        raise MixcError(f"{path}: no rows below the header")
    return Table(str(path), ids, columns, np.array(values, dtype=np.float64))


def format_table(id_column: str, columns: list[str], ids: list[str], rows: list[list[float | None]]) -> str:
    """CSV text; numbers in repr form so that a round trip reads back the same floats."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([id_column, *columns])
    for run, row in zip(ids, rows):
        writer.writerow([run, *("" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v)) for v in row)])
    return out.getvalue()


def write_table(path: str | Path, id_column: str, columns: list[str], ids: list[str], rows: list[list[float | None]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, format_table(id_column, columns, ids, rows).encode())
    return path
