"""The key-number sentences that lead each section of the group report, from the group tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from thalamus_bidsapp.methods.registry import UNFILLED_SUFFIX
from thalamus_bidsapp.reports.figures_common import COURSE_ORDER, OUTCOME_LABELS, method_labels


def numeric(table: pd.DataFrame, column: str) -> pd.Series:
    """``table[column]`` as numbers (unparsable values NaN); all NaN when the table has no such column."""
    return pd.to_numeric(table[column], errors="coerce") if column in table else pd.Series(np.nan, index=table.index)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.01 else f"= {p:.2f}"


def _outcome(name: object) -> str:
    return OUTCOME_LABELS.get(str(name), str(name).replace("_", " "))


def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(label=method_labels(table)) if "method" in table else table.assign(label="")


def agreement_lead(summary: pd.DataFrame | None, volumetric: pd.DataFrame | None,
                   pairwise: pd.DataFrame | None) -> list[str]:
    """Key sentences of the agreement with the manual masks: Dice extremes, pairwise differences, bias and CCC."""
    lead = []
    if summary is not None and not summary.empty and "metric" in summary:
        dice = summary[summary["metric"].astype(str) == "dice"].assign(median=lambda t: numeric(t, "median"))
        dice = dice.dropna(subset=["median"]).sort_values("median", ascending=False)
        if not dice.empty:
            best = dice.iloc[0]
            text = (f"{best['method']} has the highest median Dice, {best['median']:.3f} "
                    f"(IQR {float(best['q1']):.3f} to {float(best['q3']):.3f}, n = {int(best['n'])})")
            if len(dice) > 1:
                worst = dice.iloc[-1]
                text += f"; {worst['method']} the lowest, {worst['median']:.3f}"
            lead.append(text + ".")
    # p_fdr_bh: the column's name in older group tables
    p_fdr = next((c for c in ("p_fdr", "p_fdr_bh") if pairwise is not None and c in pairwise), None)
    if pairwise is not None and not pairwise.empty and "metric" in pairwise and p_fdr:
        dice_pairs = pairwise[pairwise["metric"].astype(str) == "dice"]
        n_sig = int((numeric(dice_pairs, p_fdr) < 0.05).sum())
        lead.append(f"{n_sig} of {len(dice_pairs)} pairwise Dice comparisons differ (Wilcoxon signed-rank, "
                    "p_FDR < 0.05).")
    if volumetric is not None and not volumetric.empty and "bias_ml" in volumetric:
        table = volumetric.assign(bias=numeric(volumetric, "bias_ml"), ccc=numeric(volumetric, "ccc")).dropna(
            subset=["bias"])
        if not table.empty:
            small = table.loc[table["bias"].abs().idxmin()]
            large = table.loc[table["bias"].abs().idxmax()]
            text = f"Bland-Altman bias is smallest for {small['method']} ({small['bias']:+.2f} mL)"
            if large["method"] != small["method"]:
                text += f" and largest for {large['method']} ({large['bias']:+.2f} mL)"
            if table["ccc"].notna().any():
                top = table.loc[table["ccc"].idxmax()]
                text += f"; {top['method']} has the highest CCC ({top['ccc']:.2f})"
            lead.append(text + ".")
    return lead


def containment_lead(containment: pd.DataFrame) -> list[str]:
    """Key sentences of the directed containment between methods."""
    pairs = containment[containment["method_a"].astype(str) != containment["method_b"].astype(str)]
    pairs = pairs.assign(mean=numeric(pairs, "containment_mean")).dropna(subset=["mean"])
    if pairs.empty:
        return []
    low, high = pairs.loc[pairs["mean"].idxmin()], pairs.loc[pairs["mean"].idxmax()]
    return [f"Mean directed containment between methods ranges from {low['mean']:.2f} ({low['method_a']} inside "
            f"{low['method_b']}) to {high['mean']:.2f} ({high['method_a']} inside {high['method_b']})."]


def association_lead(table: pd.DataFrame, what: str, unit: str) -> list[str]:
    """Key sentence of a family of clinical models (``what``, betas ``unit``): which associations survive FDR."""
    table = _labelled(table).assign(beta=numeric(table, "beta"), p_fdr=numeric(table, "p_fdr"))
    fitted = table.dropna(subset=["beta", "p_fdr"])
    if fitted.empty:
        return [f"No {what} model could be fitted (see the note column of the table)."]
    significant = fitted[fitted["p_fdr"] < 0.05].sort_values("p_fdr")
    if significant.empty:
        best = fitted.loc[fitted["p_fdr"].idxmin()]
        return [f"None of the {len(fitted)} {what} associations survives the Benjamini-Hochberg correction (the "
                f"smallest p_FDR is {best['p_fdr']:.2f}, {_outcome(best['outcome'])} with {best['label']})."]
    shown = [f"{_outcome(r['outcome'])} with {r['label']} (β = {r['beta']:.3g} {unit}, p_FDR {_p(r['p_fdr'])})"
             for _, r in significant.head(4).iterrows()]
    more = f", and {len(significant) - 4} more" if len(significant) > 4 else ""
    return [f"{len(significant)} of {len(fitted)} {what} associations survive the Benjamini-Hochberg correction: "
            f"{'; '.join(shown)}{more}."]


def longitudinal_lead(deltas: pd.DataFrame | None, regression: pd.DataFrame | None) -> list[str]:
    """Key sentences of the thalamic change and of the models of the changes."""
    lead = []
    if deltas is not None and not deltas.empty and "pct_volume_ml" in deltas:
        table = _labelled(deltas).assign(pct=numeric(deltas, "pct_volume_ml")).dropna(subset=["pct"])
        medians = table.groupby("label")["pct"].median().sort_values()
        if not medians.empty:
            n = table["participant_id"].nunique() if "participant_id" in table else len(table)
            parts = ", ".join(f"{m} {v:+.2f}%" for m, v in medians.items())
            lead.append(f"Median thalamic volume change from baseline ({n} subjects): {parts}.")
        lead += change_source_lead(deltas)
    if regression is not None and not regression.empty and "beta" in regression:
        lead += association_lead(regression, "change", "per mL")
    return lead


def change_source_lead(deltas: pd.DataFrame) -> list[str]:
    """Where the thalamic change of the models came from (the deltas' ``change_source``), when recorded."""
    if "change_source" not in deltas or deltas.empty:
        return []
    table = _labelled(deltas)
    longitudinal = table["change_source"].astype(str) == "longitudinal"
    if not longitudinal.any():
        return ["The thalamic change of the models is the difference of the sessions' own (cross-sectional) "
                "volumes: no subject has longitudinal-mode pairs from baseline to follow-up."]
    counts = longitudinal.groupby(table["label"]).agg(["sum", "size"])
    parts = ", ".join(f"{label} {int(row['sum'])} of {int(row['size'])}" for label, row in counts.iterrows())
    return [f"The thalamic change of the models comes from the longitudinal mode (one within-subject template) for "
            f"{int(longitudinal.sum())} of {len(table)} subject-method pairs ({parts}); the others use the difference "
            "of the sessions' own (cross-sectional) volumes (change_source column)."]


def progression_lead(subjects: pd.DataFrame | None, ancova: pd.DataFrame | None) -> list[str]:
    """Key sentences of the EDSS course groups: their sizes and whether their thalamic change differs."""
    lead = []
    if subjects is not None and "edss_course" in subjects and "participant_id" in subjects:
        counts = subjects.dropna(subset=["edss_course"]).drop_duplicates("participant_id")["edss_course"]
        counts = counts.astype(str).value_counts()
        if not counts.empty:
            lead.append("EDSS course: " + ", ".join(f"{c} {counts[c]}" for c in COURSE_ORDER if c in counts)
                        + f" subject(s) (of {int(counts.sum())}).")
        lead += change_source_lead(subjects)
    if ancova is not None and not ancova.empty and {"source", "p"} <= set(ancova.columns):
        rows = _labelled(ancova[ancova["source"].astype(str) == "edss_course"])
        rows = rows.assign(p=numeric(rows, "p")).dropna(subset=["p"])
        if not rows.empty:
            significant = rows[rows["p"] < 0.05].sort_values("p")
            if significant.empty:
                lead.append(f"The groups do not differ in % thalamic change for any of {len(rows)} method(s) "
                            "(ANCOVA adjusted for age and follow-up time, p ≥ 0.05).")
            else:
                shown = "; ".join(f"{r['label']} (p {_p(r['p'])})" for _, r in significant.iterrows())
                lead.append(f"The groups differ in % thalamic change (ANCOVA adjusted for age and follow-up time) "
                            f"for {len(significant)} of {len(rows)} method(s): {shown}.")
    return lead


def power_lead(power: pd.DataFrame) -> list[str]:
    """Key sentence of the sample sizes: the methods needing the fewest and the most subjects per arm."""
    table = _labelled(power).assign(n=numeric(power, "n_per_arm")).dropna(subset=["n"]).sort_values("n")
    if table.empty:
        return []
    best, worst = table.iloc[0], table.iloc[-1]
    setting = ""
    if {"difference_pct_per_year", "power", "alpha"} <= set(table.columns):
        setting = (f" to detect a difference of {float(best['difference_pct_per_year']):g} %/year in annual "
                   f"thalamic atrophy with {float(best['power']):.0%} power (two-sided α = {float(best['alpha']):g})")
    text = f"{best['label']} needs the fewest subjects per arm{setting}: {int(best['n'])}"
    if worst["label"] != best["label"]:
        text += f"; {worst['label']} needs the most, {int(worst['n'])}"
    return [text + "."]


def template_lead(maps: pd.DataFrame) -> list[str]:
    """One sentence on the template-space maps: each method's volume at probability 0.5, where the methods disagree.

    The maps of the masks made on the unfilled T1w (desc-<mask>Unfilled) cover
    only the sessions with lesions: they are named apart, never in the list of
    the methods' volumes.
    """
    probability = maps[maps["map"].astype(str) == "probability"]
    if probability.empty:
        return []
    unfilled = probability["method"].astype(str).str.endswith(UNFILLED_SUFFIX)
    shown = probability[~unfilled] if (~unfilled).any() else probability
    text = (f"Each method's masks resampled into {probability['template'].iloc[0]}: "
            + "; ".join(f"{m} {v:.1f} mL at probability >= 0.5 (n = {int(n)})" for m, v, n in
                        zip(shown["method"], numeric(shown, "volume_ml_at_half"), numeric(shown, "n_sessions")))
            + ".")
    if unfilled.any() and (~unfilled).any():
        text += (f" The masks made on the unfilled T1w ({', '.join(probability.loc[unfilled, 'method'])}) have their "
                 "maps too, over the sessions with lesions only; the disagreement map leaves them out.")
    disagreement = maps[maps["map"].astype(str) == "disagreement"]
    if not disagreement.empty:
        text += (f" At least a quarter of the methods disagree with the majority, on average over "
                 f"{int(numeric(disagreement, 'n_sessions').iloc[0])} session(s), in "
                 f"{float(numeric(disagreement, 'volume_ml_at_half').iloc[0]):.1f} mL.")
    return [text]
