"""What the group report says about the volumes themselves, from ``group/volumes.tsv`` alone.

Three readings of the volumes table, each compared like with like:

- :func:`filling_pairs`: ``--lesion-filling both`` makes every T1w method's
  mask twice on a session with lesions, ``desc-<mask>`` on the filled T1w
  and ``desc-<mask>Unfilled`` on the unfilled one. Only the sessions with
  both masks are compared, as paired differences (filled minus unfilled);
  the medians of the two methods over their own sessions are never set side
  by side (the filled mask exists on sessions without lesions too);
- :func:`lesion_table`: per session with a lesion mask its lesion volume,
  the lesion inside and near each method's thalamus, and the thalamus volume;
- :func:`asymmetry_table`: per session and method the left/right asymmetry
  index, 100 x (left - right) / ((left + right) / 2), in %.

The last two leave the ``desc-<mask>Unfilled`` masks to the paired section.

The ``*_lead`` functions write the sentences that open each section, and
:func:`volumes_lead` the one of the volumes section (medians over the
sessions every method measured).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thalamus_bidsapp.methods.registry import UNFILLED_SUFFIX
from thalamus_bidsapp.reports.palette import method_order

_KEY = ["participant_id", "session_id"]
#: Fewest sessions for a correlation to be reported.
_MIN_CORRELATION = 5


def _numeric(table: pd.DataFrame, column: str) -> pd.Series:
    return (pd.to_numeric(table[column], errors="coerce") if column in table
            else pd.Series(np.nan, index=table.index, dtype=float))


def _keyed(volumes: pd.DataFrame) -> pd.DataFrame:
    """The table with the key columns as text (a dataset without sessions has session_id n/a)."""
    table = volumes.copy()
    for column in _KEY:
        table[column] = table[column].astype(object).where(table[column].notna(), "") if column in table else ""
        table[column] = table[column].astype(str)
    table["method"] = table["method"].astype(str)
    return table


def _hemisphere(volumes: pd.DataFrame, which: str) -> pd.DataFrame:
    table = _keyed(volumes)
    if "hemisphere" in table:
        sides = table["hemisphere"].astype(str)
        table = table[sides.isin(["bilateral", "both"])] if which == "bilateral" else table[sides == which]
    elif which != "bilateral":
        return table.iloc[0:0]
    return table.assign(volume_ml=_numeric(table, "volume_ml")).dropna(subset=["volume_ml"])


def _filled_only(table: pd.DataFrame) -> pd.DataFrame:
    """Without the desc-<mask>Unfilled masks: the lesion-filling section compares those, paired."""
    return table[~table["method"].str.endswith(UNFILLED_SUFFIX)]


def session_label(table: pd.DataFrame) -> pd.Series:
    """``sub-01 ses-1`` (or ``sub-01`` without sessions) of each row."""
    return (table["participant_id"].astype(str) + " " + table["session_id"].astype(str)).str.strip()


# ------------------------------------------------------------------ volumes, like with like
def volumes_lead(volumes: pd.DataFrame) -> list[str]:
    """Sessions, methods, and the range of the methods' medians over the sessions every method measured."""
    bilateral = _hemisphere(volumes, "bilateral")
    if bilateral.empty:
        return []
    sessions = bilateral[_KEY].drop_duplicates()
    filled = _filled_only(bilateral)
    n_unfilled = bilateral["method"].nunique() - filled["method"].nunique()
    twins = f" (and {n_unfilled} on the unfilled T1w)" if n_unfilled else ""
    text = (f"{filled['method'].nunique()} method(s){twins} on {len(sessions)} session(s) of "
            f"{sessions['participant_id'].nunique()} subject(s).")
    methods = method_order(filled["method"])
    wide = filled.pivot_table(index=_KEY, columns="method", values="volume_ml", aggfunc="mean")
    lead = [text]
    if len(methods) == 1:
        lead.append(f"Median thalamus volume: {wide[methods[0]].median():.2f} mL ({methods[0]}, "
                    f"{int(wide[methods[0]].notna().sum())} sessions).")
    else:
        common = wide[methods].dropna()
        if len(common):
            medians = common.median().sort_values()
            lead.append(f"Over the {len(common)} session(s) that every method measured, the median thalamus volume "
                        f"ranges from {medians.iloc[0]:.2f} mL ({medians.index[0]}) to {medians.iloc[-1]:.2f} mL "
                        f"({medians.index[-1]}).")
        else:
            lead.append("No session has a volume from every method, so the methods' medians are not compared here "
                        "(see the scatter matrix and the between-methods section for the sessions they share).")
    if filled["method"].nunique() < bilateral["method"].nunique():
        lead.append("The masks made on the unfilled T1w (desc-<mask>Unfilled) are compared with their lesion-filled "
                    "counterparts on the same sessions in the lesion-filling section.")
    return lead


# ------------------------------------------------------------------ lesion filling: paired
def filling_pairs(volumes: pd.DataFrame) -> pd.DataFrame:
    """Per session and method, the filled and unfilled whole-thalamus volumes of the sessions with both.

    Columns: participant_id, session_id, method (the filled mask's desc),
    filled_ml, unfilled_ml, difference_ml (filled - unfilled), mean_ml.
    """
    bilateral = _hemisphere(volumes, "bilateral")
    columns = [*_KEY, "method", "filled_ml", "unfilled_ml", "difference_ml", "mean_ml"]
    unfilled = bilateral[bilateral["method"].str.endswith(UNFILLED_SUFFIX)]
    if unfilled.empty:
        return pd.DataFrame(columns=columns)
    unfilled = unfilled.assign(method=unfilled["method"].str.removesuffix(UNFILLED_SUFFIX))
    pairs = bilateral.merge(unfilled, on=[*_KEY, "method"], suffixes=("_filled", "_unfilled"))
    pairs = pairs.rename(columns={"volume_ml_filled": "filled_ml", "volume_ml_unfilled": "unfilled_ml"})
    pairs["difference_ml"] = pairs["filled_ml"] - pairs["unfilled_ml"]
    pairs["mean_ml"] = (pairs["filled_ml"] + pairs["unfilled_ml"]) / 2
    order = {m: i for i, m in enumerate(method_order(pairs["method"]))}
    return pairs[columns].sort_values(["method", *_KEY], key=lambda s: s.map(order) if s.name == "method" else s)


def filling_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per method: n pairs, mean and SD of the paired differences, 95% limits of agreement, median and IQR."""
    rows = []
    for method in method_order(pairs["method"]):
        d = pairs.loc[pairs["method"] == method, "difference_ml"].to_numpy(float)
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
        mean = float(np.mean(d))
        rows.append({"method": method, "n_sessions": len(d), "mean_difference_ml": mean, "sd_ml": sd,
                     "loa_low_ml": mean - 1.96 * sd, "loa_high_ml": mean + 1.96 * sd,
                     "median_difference_ml": float(np.median(d)), "q1_ml": float(np.percentile(d, 25)),
                     "q3_ml": float(np.percentile(d, 75))})
    return pd.DataFrame(rows)


def filling_lead(summary: pd.DataFrame) -> list[str]:
    if summary.empty:
        return []
    parts = []
    for row in summary.itertuples():
        spread = f"IQR {row.q1_ml:+.2f} to {row.q3_ml:+.2f}, " if row.n_sessions > 1 else ""
        text = f"{row.method} {row.median_difference_ml:+.2f} mL ({spread}n = {row.n_sessions}"
        if np.isfinite(row.loa_low_ml):
            text += f"; limits of agreement {row.loa_low_ml:+.2f} to {row.loa_high_ml:+.2f} mL"
        parts.append(text + ")")
    return ["Paired on the sessions with both masks, the median change of the thalamus volume that lesion filling "
            "makes (filled minus unfilled T1w): " + "; ".join(parts) + "."]


# ------------------------------------------------------------------ lesion load
def lesion_table(volumes: pd.DataFrame) -> pd.DataFrame:
    """Per session and method with a lesion mask: lesion volume, lesion in and near the thalamus, thalamus volume."""
    bilateral = _filled_only(_hemisphere(volumes, "bilateral"))
    table = bilateral.assign(lesion_ml=_numeric(bilateral, "lesion_volume_ml"),
                             in_ml=_numeric(bilateral, "lesion_in_thalamus_ml"),
                             near_ml=_numeric(bilateral, "lesion_near_thalamus_ml"))
    table = table.dropna(subset=["lesion_ml"])
    return table[[*_KEY, "method", "volume_ml", "lesion_ml", "in_ml", "near_ml"]]


def lesion_lead(lesions: pd.DataFrame) -> list[str]:
    if lesions.empty:
        return []
    sessions = lesions.drop_duplicates(_KEY)
    lead = [f"{len(sessions)} session(s) of {sessions['participant_id'].nunique()} subject(s) have a lesion mask: "
            f"median lesion volume {sessions['lesion_ml'].median():.2f} mL "
            f"(range {sessions['lesion_ml'].min():.2f} to {sessions['lesion_ml'].max():.2f})."]
    parts = []
    for method in method_order(lesions["method"]):
        rows = lesions[lesions["method"] == method]
        inside = int((rows["in_ml"] > 0).sum())
        near = int((rows["near_ml"] > 0).sum())
        parts.append(f"{method}: lesions inside the thalamus in {inside} and within 3 mm of it in {near} of "
                     f"{len(rows)} session(s)")
    lead.append("; ".join(parts) + ".")
    correlations = []
    for method in method_order(lesions["method"]):
        rows = lesions[lesions["method"] == method]
        if len(rows) >= _MIN_CORRELATION and rows["lesion_ml"].nunique() > 1:
            rho = rows["lesion_ml"].corr(rows["volume_ml"], method="spearman")
            correlations.append(f"{method} ρ = {rho:+.2f} (n = {len(rows)})")
    if correlations:
        lead.append("Spearman correlation of lesion volume with thalamus volume: " + "; ".join(correlations) + ".")
    return lead


# ------------------------------------------------------------------ left/right asymmetry
def asymmetry_table(volumes: pd.DataFrame) -> pd.DataFrame:
    """Per session and method: left and right volume and the asymmetry index (%; positive: left larger)."""
    left, right = _filled_only(_hemisphere(volumes, "left")), _filled_only(_hemisphere(volumes, "right"))
    sides = left.merge(right, on=[*_KEY, "method"], suffixes=("_left", "_right"))
    sides = sides.rename(columns={"volume_ml_left": "left_ml", "volume_ml_right": "right_ml"})
    total = sides["left_ml"] + sides["right_ml"]
    sides["asymmetry_pct"] = np.where(total > 0, 100 * (sides["left_ml"] - sides["right_ml"]) / (total / 2), np.nan)
    return sides[[*_KEY, "method", "left_ml", "right_ml", "asymmetry_pct"]].dropna(subset=["asymmetry_pct"])


def asymmetry_lead(asymmetry: pd.DataFrame) -> list[str]:
    if asymmetry.empty:
        return []
    parts = []
    for method in method_order(asymmetry["method"]):
        values = asymmetry.loc[asymmetry["method"] == method, "asymmetry_pct"]
        spread = f"IQR {values.quantile(0.25):+.1f} to {values.quantile(0.75):+.1f}, " if len(values) > 1 else ""
        parts.append(f"{method} {values.median():+.1f}% ({spread}n = {len(values)})")
    return ["Median left/right asymmetry index, 100 × (left − right) / mean of left and right (positive: the left "
            "thalamus is larger), per method over its own sessions: " + "; ".join(parts) + "."]


# ------------------------------------------------------------------ the report's sections
#: Section id -> (heading, nav label, figure stem): the sections drawn from the volumes table alone.
VOLUME_SECTIONS = {
    "lesion-filling": ("Lesion filling: filled against unfilled T1w, paired by session", "Lesion filling",
                       "filling_blandaltman"),
    "lesions": ("Lesion load and the thalamus", "Lesions", "lesion_load"),
    "asymmetry": ("Left/right asymmetry", "Asymmetry", "asymmetry"),
}
_DECIMALS = {"filled_ml": 2, "unfilled_ml": 2, "difference_ml": 2, "mean_ml": 2, "mean_difference_ml": 2,
             "sd_ml": 2, "loa_low_ml": 2, "loa_high_ml": 2, "median_difference_ml": 2, "q1_ml": 2, "q3_ml": 2,
             "volume_ml": 2, "lesion_ml": 2, "in_ml": 2, "near_ml": 2, "left_ml": 2, "right_ml": 2,
             "asymmetry_pct": 1}


def _collapsed(title: str, table: pd.DataFrame, note: str = "") -> str:
    from thalamus_bidsapp.reports.html import esc, html_table

    return (f'<details class="table"><summary><strong>{esc(title)}</strong> · {len(table)} rows</summary>'
            f'<div class="table-body">{html_table(table, decimals=_DECIMALS, max_rows=300)}'
            f"{note}</div></details>")


def volume_section(section_id: str, volumes: pd.DataFrame | None) -> tuple[list[str], str | None, str]:
    """(lead sentences, why not run or None, HTML after the figure) of one of :data:`VOLUME_SECTIONS`."""
    from thalamus_bidsapp.reports.html import html_table

    if volumes is None or not {"participant_id", "method", "volume_ml"} <= set(volumes):
        return [], "Not run: no group volumes table (run the group level after the participant level).", ""
    volumes = volumes.assign(session_id=volumes["session_id"] if "session_id" in volumes else "")
    if section_id == "lesion-filling":
        pairs = filling_pairs(volumes)
        if pairs.empty:
            return [], ("Not run: no session has both a lesion-filled mask and its desc-<mask>Unfilled twin (run "
                        "the participant level with --lesion-filling both on sessions with a lesion mask)."), ""
        summary = filling_summary(pairs)
        html = (html_table(summary, decimals=_DECIMALS)
                + '<p class="note">Paired differences, filled minus unfilled whole-thalamus volume, over the '
                  "sessions with both masks only; limits of agreement: mean ± 1.96 SD.</p>"
                + _collapsed("Every pair", pairs))
        return filling_lead(summary), None, html
    if section_id == "lesions":
        lesions = lesion_table(volumes)
        if lesions.empty:
            return [], "Not run: no session has a lesion mask (lesion_volume_ml is n/a in group/volumes.tsv).", ""
        return lesion_lead(lesions), None, _collapsed("Lesions per session and method", lesions)
    asymmetry = asymmetry_table(volumes)
    if asymmetry.empty:
        return [], "Not run: group/volumes.tsv has no left and right rows (hemisphere) to compare.", ""
    return asymmetry_lead(asymmetry), None, _collapsed("Asymmetry per session and method", asymmetry)
