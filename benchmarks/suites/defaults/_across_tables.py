"""The tables of the ``across`` experiment: every run (:func:`runs_table`), one line per
setting (:func:`pivot`) and one per method (:func:`summary`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the 2% goal on the other types' held-out ELBO
GOAL = 0.02


def _se(r) -> str:
    """`` ± se`` of the check's drop (absent from rows measured before it had its margin)."""
    return f" ± {100 * r['guard_se']:.2f}" if "guard_se" in r else ""


def _pct(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:+.2f}%"


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """Every run: the held-out changes, the retain-training drop, the check, the time."""
    out = []
    for r in rows:
        head = {
            "data": r["dataset"],
            "epochs": r["epochs"],
            "forget (n)": f"{r['forget']} ({r['n_forget']})",
            "method": r["method"],
        }
        if "error" in r:
            out.append(head | {"held-out other types": r["error"]})
            continue
        out.append(
            head
            | {
                "held-out other types": _pct(r["other_change"]),
                "held-out same type": _pct(r["same_change"]),
                "retain-train drop": f"{100 * r['train_drop']:.2f}%",
                "guard drop": f"{100 * r['guard_drop']:.2f}%{_se(r)}",
                "guard": "pass" if r["guard_passed"] else "FAIL",
                "time (s)": f"{r['seconds']:.1f}",
            }
        )
    return pd.DataFrame(out).fillna("")


def _bound(r) -> float:
    """The check's decision statistic: drop + CHECK_Z x its standard error (rows measured before
    the check had its margin have no ``guard_se``: nan)."""
    from scvi_unlearn.unlearn.core._guard import CHECK_Z

    return r["guard_drop"] + CHECK_Z * r.get("guard_se", float("nan"))


def summary(rows: list[dict]) -> pd.DataFrame:
    """Per method: worst held-out change of the other types, settings beyond the 2% goal, and
    how many of those the retain-ELBO check flags (from its measured drop and standard error,
    whatever rule the run used): with the point drop at a 5% and at a 2% tolerance, and with the
    default rule (the one-sided 95% bound, drop + 1.645 se, above 2%); false alarms = flagged
    although the held-out change is within 2%."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        ok = [r for r in rs if "error" not in r]
        worst = min((r["other_change"] for r in ok), default=float("nan"))
        bad = [r for r in ok if r["other_change"] < -GOAL]
        good = [r for r in ok if r["other_change"] >= -GOAL]
        has_se = all("guard_se" in r for r in ok)
        at5 = sum(r["guard_drop"] > 0.05 for r in bad)
        at2 = sum(r["guard_drop"] > GOAL for r in bad)
        bound = sum(_bound(r) > GOAL for r in bad) if has_se else "-"
        false_alarm = sum(r["guard_drop"] > GOAL for r in good)
        false_bound = sum(_bound(r) > GOAL for r in good) if has_se else "-"
        errors = len(rs) - len(ok)
        out.append(
            {
                "method": method,
                "settings": f"{len(ok)}{f' (+{errors} errors)' if errors else ''}",
                "worst held-out other types": _pct(worst),
                "beyond -2%": len(bad),
                "flagged: point 5% / point 2% / bound 2% (default)": f"{at5} / {at2} / {bound}",
                "false alarms: point 2% / bound 2%": f"{false_alarm} / {false_bound}",
            }
        )
    return pd.DataFrame(out)


def pivot(rows: list[dict]) -> pd.DataFrame:
    """One line per setting, one column per method: held-out change of the other types; ``*``
    where the retain-ELBO check flags the run (its default rule: drop + 1.645 se above 2%; the
    point drop above 2% for rows measured without the standard error)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings: dict[tuple, dict] = {}
    for r in rows:
        key = (r["dataset"], r["epochs"], f"{r['forget']} ({r['n_forget']})")
        settings.setdefault(key, {})[r["method"]] = r
    out = []
    for (data, epochs, forget), by in settings.items():
        line = {"data": data, "epochs": epochs, "forget (n)": forget}
        for m in methods:
            r = by.get(m)
            if r is None or "error" in r:
                line[m] = "-" if r is None else "error"
            else:
                stat = _bound(r) if "guard_se" in r else r["guard_drop"]
                line[m] = f"{100 * r['other_change']:+.2f}{'*' if stat > GOAL else ''}"
        out.append(line)
    return pd.DataFrame(out)
