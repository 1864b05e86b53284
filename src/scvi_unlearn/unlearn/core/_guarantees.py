"""What each registered unlearning method guarantees: :func:`methods` and :func:`guarantee`.

The table is built from the registrations (:func:`~scvi_unlearn.unlearn.register` and its
metadata), so the benchmark's ``methods="all"``, the command line and the docs' method table
read one source.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from scvi_unlearn.unlearn.core._registry import (
    DEFAULT_METHOD,
    FROM_SCRATCH,
    GENERIC_GUARANTEES,
    KINDS,
    METHODS,
    REGISTRATIONS,
    get_method,
)

#: Columns of :func:`methods`, in order.
METHOD_COLUMNS = (
    "name",
    "kind",
    "exact",
    "private",
    "status",
    "guarantee",
    "reference",
    "measured",
    "benchmark",
)


def _row(name: str) -> dict[str, Any]:
    info = REGISTRATIONS.get(name)
    if info is None:  # put into METHODS by hand: what FROM_SCRATCH says
        kind = "exact" if name in FROM_SCRATCH else "approximate"
        info = {
            "kind": kind,
            "exact": name in FROM_SCRATCH,
            "private": False,
            "status": "user",
            "guarantee": GENERIC_GUARANTEES[kind],
            "reference": "",
            "measured": "",
            "benchmark": False,
        }
    row = {"name": name, **info, "exact": name in FROM_SCRATCH}
    if name == DEFAULT_METHOD:
        row["status"] = "default"
    return row


def methods() -> pd.DataFrame:
    """The registered methods and what each guarantees, one row per method.

    Built from the registrations (:func:`register`), so a method added by the user appears
    too.  Rows are ordered by kind (exact, private, approximate, adversarial), then by name.

    Returns
    -------
    pandas.DataFrame
        Columns (:data:`METHOD_COLUMNS`):

        * ``name`` -- the name passed as ``method=``;
        * ``kind`` -- ``"exact"``, ``"private"``, ``"approximate"`` or ``"adversarial"``
          (:data:`KINDS`);
        * ``exact`` -- the output depends only on the retain cells, the seed and at most one
          number of the original (a fresh model on the retain cells; :data:`FROM_SCRATCH`);
        * ``private`` -- a differential-privacy guarantee;
        * ``status`` -- ``"default"`` (:data:`DEFAULT_METHOD`), ``"recommended"``,
          ``"research baseline"`` or ``"user"``;
        * ``guarantee`` -- what the method guarantees, in words;
        * ``reference`` -- the paper it follows;
        * ``measured`` -- the documented verdict pass rate and cost with their source (empty
          when not measured);
        * ``benchmark`` -- included in ``su.benchmark.run(methods="all")``.

    Examples
    --------
    >>> import scvi_unlearn as su
    >>> table = su.unlearn.methods()
    >>> table.loc[table["exact"], "name"].tolist()
    ['fast_retrain', 'retrain', 'dp_sgd']
    """
    rows = [_row(name) for name in METHODS]
    table = pd.DataFrame(rows, columns=list(METHOD_COLUMNS))
    order = table["kind"].map({k: i for i, k in enumerate(KINDS)}).fillna(len(KINDS))
    table = table.assign(_order=order).sort_values(["_order", "name"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def guarantee(name: str) -> dict[str, Any]:
    """The row of :func:`methods` for method ``name``, as a dict.

    Parameters
    ----------
    name
        A registered method's name.

    Returns
    -------
    dict
        ``name``, ``kind``, ``exact``, ``private``, ``status``, ``guarantee``, ``reference``,
        ``measured`` and ``benchmark`` (see :func:`methods`), with plain Python values.

    Raises
    ------
    ValueError
        For an unknown name, listing the available ones.
    """
    get_method(name)
    return _row(name)
