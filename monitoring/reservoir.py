"""A seeded uniform sample of at most `budget` rows from a stream of column chunks, in memory flat in the stream.

Each row gets a uniform random key as it arrives (one seeded stream of keys, so the sample does not depend on
how the rows were chunked); the sample is the `budget` rows with the smallest keys (bottom-k sampling, which is
uniform without replacement). Rows are kept in preallocated numpy columns that grow by doubling up to the
budget; once full, an arriving row with a smaller key overwrites, in place, the kept row with the largest key.
"""

from __future__ import annotations

import numpy as np


def _missing(dtype: np.dtype):
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "M":
        return np.datetime64("NaT")
    if dtype.kind in "iub":
        return 0  # integer and boolean columns are never missing in practice (`item`); 0 keeps the dtype
    return None


class Reservoir:
    """Keeps a uniform sample of the rows added to it.

    Args:
        budget: Most rows kept (None: keep every row).
        seed: Seed of the row keys.
    """

    def __init__(self, budget: int | None, seed: int) -> None:
        if budget is not None and budget < 1:
            raise ValueError(f"the row budget must be at least 1, got {budget}")
        self.budget = budget
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._size = 0
        self._keys = np.empty(0, dtype=np.float64)
        self._columns: dict[str, np.ndarray] = {}

    @property
    def sampled(self) -> bool:
        """Whether rows were left out."""
        return self.seen > self._size

    def add(self, columns: dict[str, np.ndarray]) -> None:
        """Offers a chunk of rows (columns of equal length; a column missing here is missing for these rows)."""
        rows = len(next(iter(columns.values()))) if columns else 0
        if rows == 0:
            return
        keys = self._rng.random(rows)
        self.seen += rows
        for name, values in columns.items():
            if name not in self._columns:
                self._columns[name] = np.full(len(self._keys), _missing(values.dtype), dtype=values.dtype)
        take = rows if self.budget is None else min(rows, self.budget - self._size)
        if take:
            self._grow(self._size + take)
            self._write(np.arange(self._size, self._size + take), columns, np.arange(take))
            self._keys[self._size : self._size + take] = keys[:take]
            self._size += take
        if take == rows:
            return
        rest = np.arange(take, rows)
        # Bottom-k merge: of the kept rows and the rest of this chunk, the `budget` smallest keys stay.
        combined = np.concatenate([self._keys[: self._size], keys[rest]])
        kept = np.argpartition(combined, self._size - 1)[: self._size]
        incoming = kept[kept >= self._size] - self._size
        if not len(incoming):
            return
        stays = np.zeros(self._size, dtype=bool)
        stays[kept[kept < self._size]] = True
        replaced = np.flatnonzero(~stays)
        self._write(replaced, columns, rest[incoming])
        self._keys[replaced] = keys[rest[incoming]]

    def _grow(self, needed: int) -> None:
        capacity = len(self._keys)
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity, 1024)
        if self.budget is not None:
            capacity = min(capacity, self.budget)
        keys = np.empty(capacity, dtype=np.float64)
        keys[: self._size] = self._keys[: self._size]
        self._keys = keys
        for name, values in self._columns.items():
            grown = np.full(capacity, _missing(values.dtype), dtype=values.dtype)
            grown[: self._size] = values[: self._size]
            self._columns[name] = grown

    def _write(self, positions: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray) -> None:
        for name, kept in self._columns.items():
            values = columns.get(name)
            kept[positions] = _missing(kept.dtype) if values is None else values[rows]

    def columns(self) -> dict[str, np.ndarray]:
        """The kept rows, column by column (views into the reservoir)."""
        return {name: values[: self._size] for name, values in self._columns.items()}
