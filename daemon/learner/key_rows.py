"""Per-key rows of named arrays that grow as keys arrive and widen as classes appear: the
storage of the compiled per-key experts (:mod:`adaptd.learner.trees`,
:mod:`adaptd.learner.aode`), each of which says how its arrays are shaped, how a new class
widens them and what its memory budget allows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from adaptd.learner.pages import copy_rows, small_pages


class KeyRows:
    """``arrays``: name → array whose first axis is the key's row; ``classes``: the width of
    the class axis so far. Subclasses give :meth:`_empty`, :meth:`_widen` and
    :meth:`_fit_budget`."""

    arrays: dict[str, np.ndarray]
    classes: int

    def _empty(self, rows: int) -> dict[str, np.ndarray]:
        """Fresh arrays for ``rows`` keys."""
        raise NotImplementedError

    def _widen(self, extra: int) -> None:
        """Add ``extra`` classes (zero statistics) to the class axes of :attr:`arrays`."""
        raise NotImplementedError

    def _fit_budget(self, rows: int, n_classes: int) -> None:
        """Make room within the memory budget for ``rows`` keys of ``n_classes`` classes."""
        raise NotImplementedError

    def _batch(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
               reset: np.ndarray, n_classes: int, out: np.ndarray) -> None:
        """The compiled pass over a batch (see :meth:`run`)."""
        raise NotImplementedError

    def run(self, slots: np.ndarray, X: np.ndarray, ys: np.ndarray, learn: np.ndarray,
            reset: np.ndarray, n_classes: int, columns: bool = False) -> np.ndarray:
        """Predictions ``(n, C)``: binary is one column, P(y = 1), unless ``columns``; else
        the ``n_classes`` probabilities. Each record is predicted from its key's row
        (``slots``), then learned if ``learn`` marks it (``ys``: class indices), then the
        key's row restarts if ``reset`` does (its drift alarm on that record)."""
        self.ensure_classes(n_classes)
        out = np.empty((len(slots), n_classes if n_classes > 2 or columns else 1))
        self._batch(slots, np.ascontiguousarray(X, dtype=np.float64), ys, learn, reset,
                    n_classes, out)
        return out

    def n_rows(self) -> int:
        """Keys there is room for."""
        return len(next(iter(self.arrays.values())))

    def grow(self, rows: int) -> None:
        """Room for ``rows`` keys (existing rows kept, within :meth:`_fit_budget`)."""
        old = self.n_rows()
        if rows <= old:
            return
        self._fit_budget(rows, self.classes)
        self.arrays = grown(self.arrays, self._empty, rows)

    def ensure_classes(self, n_classes: int) -> None:
        """Widen the class axes to ``n_classes`` (zero for new ones), within
        :meth:`_fit_budget`."""
        if n_classes <= self.classes:
            return
        self._fit_budget(self.n_rows(), n_classes)
        extra = n_classes - self.classes
        self.classes = n_classes
        self._widen(extra)


def grown(arrays: dict[str, np.ndarray], empty: Callable[[int], dict[str, np.ndarray]],
          rows: int) -> dict[str, np.ndarray]:
    """``arrays`` with room for ``rows`` keys: fresh arrays from ``empty(rows)``, the old rows
    copied in. Where a key's row spans pages (a tree's leaf statistics, a neighbours' window)
    only its non-zero entries are copied and the new rows are left as the OS gives them
    (zero, in small pages), so a key's pages become resident as it fills them, not when its
    row is made: a concatenation wrote every byte of every row."""
    with small_pages():
        new = empty(rows)
    for name, old in arrays.items():
        if new[name][len(old)].any():  # not made zero-filled
            new[name][:len(old)] = old
        else:
            copy_rows(new[name], old)
    return new
