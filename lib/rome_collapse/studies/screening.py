"""Does a pre-flight number tell the edits that collapse from those that do not? (numpy only; notebook 08)

:func:`roc_auc`, :func:`roc_curve` and :func:`catch_all` say how well a score predicts a label; :func:`screens`,
:func:`roc_points` and :func:`plot_prediction` apply them to the pre-flight numbers of the scan
(:mod:`rome_collapse.scan`) against the perplexity each edit really caused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..collapse import RISK_THRESHOLD, collapsed


# --------------------------------------------------------------------------------------------
# How well a score predicts a label (numpy only)
# --------------------------------------------------------------------------------------------
def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError("scores and labels must be 1-D and of the same length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, labels


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of "score is high" predicting ``labels``: the chance that a random positive
    scores above a random negative, ties counting half (NaN when either class is empty)."""
    scores, labels = _check(scores, labels)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) of "score ≥ threshold", thresholds falling,
    starting at (0, 0) with threshold +inf. Needs both classes present."""
    scores, labels = _check(scores, labels)
    if labels.all() or not labels.any():
        raise ValueError("the ROC curve needs positives and negatives")
    thresholds = np.unique(scores)[::-1]
    tpr = np.array([(scores[labels] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[~labels] >= t).mean() for t in thresholds])
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


@dataclass
class CatchAll:
    """The least strict threshold on a score that flags every positive, and what it costs."""
    threshold: float  # flag when score ≥ threshold (NaN when there is no positive)
    positives: int
    negatives: int
    false_alarms: int  # negatives flagged too

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.negatives if self.negatives else float("nan")


def catch_all(scores, labels) -> CatchAll:
    """Flag every positive (score ≥ the lowest positive score) and count the negatives flagged with them."""
    scores, labels = _check(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos:
        return CatchAll(float("nan"), 0, n_neg, 0)
    t = float(scores[labels].min())
    return CatchAll(t, n_pos, n_neg, int((scores[~labels] >= t).sum()))


# --------------------------------------------------------------------------------------------
# Screens: does a pre-flight number tell the edits that collapse from those that do not?
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictor:
    """A pre-flight number (a column of the scan) and which end of it is risky: "low", "high", or "either"
    (whichever separates better, said in the result: a simple predictor gets its best chance)."""
    name: str
    column: str
    risky: str


PREDICTORS = (
    Predictor("ratio", "ratio", "low"),
    Predictor("subject is the first token", "subject_first_token", "high"),
    Predictor("cos(kᵘ, k̄)", "cos_ku_kbar", "low"),
    Predictor("‖kᵘ‖", "unprefixed_key_norm", "either"),
)


def _risk(values, risky: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return -values if risky == "low" else values


def screen(values, labels, risky: str) -> dict:
    """AUC of ``values`` as a collapse screen, and the least strict threshold that catches every collapse with
    the harmless edits it would refuse. The threshold is in the values' own units: refuse at or below it
    (risky "low") or at or above it ("high")."""
    if risky == "either":
        low = roc_auc(_risk(values, "low"), labels)
        risky = "low" if np.isnan(low) or low >= 0.5 else "high"
    risk = _risk(values, risky)
    found = catch_all(risk, labels)
    threshold = found.threshold if risky == "high" or np.isnan(found.threshold) else -found.threshold
    return {"risky": risky, "auc": roc_auc(risk, labels), "collapses": found.positives, "harmless": found.negatives,
            "catch_all_threshold": threshold, "false_refusals": found.false_alarms,
            "false_refusal_rate": found.false_alarm_rate}


def screens(table, definitions: dict[str, float], predictors=PREDICTORS):
    """One row per collapse definition (name → perplexity factor) and predictor: :func:`screen` of the
    predictor's column of ``table`` against ``table["ppl_ratio"]`` above the factor."""
    import pandas as pd

    rows = []
    for definition, factor in definitions.items():
        labels = collapsed(table["ppl_ratio"], factor)
        for p in predictors:
            rows.append({"collapse": definition, "predictor": p.name, **screen(table[p.column], labels, p.risky)})
    return pd.DataFrame(rows)


def roc_points(table, definitions: dict[str, float], predictors=PREDICTORS):
    """The ROC curve of every predictor at every definition, long format (collapse, predictor, fpr, tpr), each
    predictor in the direction :func:`screen` uses; definitions with a single class are left out."""
    import pandas as pd

    parts = []
    for definition, factor in definitions.items():
        labels = collapsed(table["ppl_ratio"], factor)
        if labels.all() or not labels.any():
            continue
        for p in predictors:
            risky = screen(table[p.column], labels, p.risky)["risky"]
            fpr, tpr, _ = roc_curve(_risk(table[p.column], risky), labels)
            parts.append(pd.DataFrame({"collapse": definition, "predictor": p.name, "fpr": fpr, "tpr": tpr}))
    columns = ["collapse", "predictor", "fpr", "tpr"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _outcomes(ppl_ratio, definitions: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """Each edit's outcome by the strictest definition its blow-up passes ("harmless" below the mildest), and the
    outcomes from the strictest down."""
    ordered = sorted(definitions, key=definitions.get)
    harmless = f"harmless (≤ {definitions[ordered[0]]:g}×)"
    out = np.full(len(ppl_ratio), harmless, dtype=object)
    for name in ordered:
        out[collapsed(ppl_ratio, definitions[name])] = f"blow-up {name}"
    return out, [f"blow-up {n}" for n in ordered[::-1]] + [harmless]


def _roc_panels(table, definitions: dict[str, float]) -> list[list[str]]:
    """The definitions grouped by the edits they call collapses: one ROC panel per group (identical panels
    would repeat each other)."""
    groups: dict[tuple, list[str]] = {}
    for name, factor in definitions.items():
        groups.setdefault(tuple(collapsed(table["ppl_ratio"], factor)), []).append(name)
    return list(groups.values())


def plot_prediction(table, points, found, definitions: dict[str, float], threshold: float = RISK_THRESHOLD):
    """Left: each edit's perplexity blow-up against its pre-flight |ratio| (log-log, a cross where the ratio is
    negative), coloured by group. Middle: |ratio| of the edits per outcome (the strictest definition each passes),
    with the CLI's threshold (dotted) and the ratio's catch-all threshold at the strictest definition (dashed): the
    gap between the outcomes is what a threshold has to fall in. Right: the ROC curve of every predictor (AUC in the
    legend), one panel per set of definitions that mark the same edits. ``table`` has ppl_ratio, ratio and group;
    ``points`` is :func:`roc_points`, ``found`` :func:`screens`. Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = _roc_panels(table, definitions)
    fig, axes = plt.subplots(1, 2 + len(panels), figsize=(5.0 * (2 + len(panels)), 4.4), squeeze=False)
    ax = axes[0, 0]
    ppl_ratio = table["ppl_ratio"].astype(float)
    top = float(np.nanmax(ppl_ratio[np.isfinite(ppl_ratio)])) * 3 if np.isfinite(ppl_ratio).any() else 1e6
    outcome, order = _outcomes(ppl_ratio, definitions)
    shown = table.assign(abs_ratio=table["ratio"].abs(), shown_ratio=ppl_ratio.where(np.isfinite(ppl_ratio), top),
                         sign=np.where(table["ratio"] < 0, "ratio < 0", "ratio ≥ 0"), outcome=outcome)
    markers = {"ratio ≥ 0": "o", "ratio < 0": "X"}
    palette = dict(zip(dict.fromkeys(shown["group"]), sns.color_palette()))
    sns.scatterplot(data=shown, x="abs_ratio", y="shown_ratio", hue="group", palette=palette, style="sign",
                    style_order=list(markers), markers=markers, s=45, ax=ax)
    for name, factor in definitions.items():
        ax.axhline(factor, color="grey", ls="--", lw=0.8)
        ax.text(shown["abs_ratio"].min(), factor * 1.08, f"collapse: {name}", fontsize=8, color="grey")
    ax.axvline(threshold, color="black", ls=":", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="|pre-flight ratio| (kᵘ·C⁻¹k̄)/(k̄·C⁻¹k̄)",
           ylabel="ME-PPL after / before", title="perplexity blow-up of each ROME edit")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[0, 1]
    order = [o for o in order if (shown["outcome"] == o).any()]
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(shown))  # seeded: the same picture every run
    rows = shown.assign(y=shown["outcome"].map({o: i for i, o in enumerate(order)}) + jitter)
    for (group, sign), part in rows.groupby(["group", "sign"], sort=False):
        ax.scatter(part["abs_ratio"], part["y"], color=palette[group], marker=markers[sign], s=30)
    ax.set(xscale="log", yticks=range(len(order)), yticklabels=order, ylim=(len(order) - 0.5, -0.5))
    ax.axvline(threshold, color="black", ls=":", lw=0.8, label=f"CLI threshold {threshold:g}")
    strict = max(definitions, key=definitions.get)
    catch = found[(found["collapse"] == strict) & (found["predictor"] == "ratio")]["catch_all_threshold"]
    if len(catch) and catch.iloc[0] > 0:
        ax.axvline(catch.iloc[0], color="tab:red", ls="--", lw=0.8, label=f"catches all {strict}: {catch.iloc[0]:.3g}")
    ax.set(xlabel="|pre-flight ratio|", ylabel="", title="the ratio per outcome")
    ax.legend(fontsize=8, loc="lower right")
    styles = [("-", 5.0, 0.4), ("--", 3.0, 0.8), ("-.", 2.0, 0.9), (":", 1.6, 1.0)]  # thick to thin: all visible
    for ax, names in zip(axes[0, 2:], panels):
        name = names[0]
        part = points[points["collapse"] == name]
        for (predictor, curve), (ls, lw, alpha) in zip(part.groupby("predictor", sort=False), styles * 2):
            row = found[(found["collapse"] == name) & (found["predictor"] == predictor)].iloc[0]
            ax.plot(curve["fpr"], curve["tpr"], ls=ls, lw=lw, alpha=alpha, label=f"{predictor} (AUC {row['auc']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
        n = found[found["collapse"] == name].iloc[0]
        same = " (same edits)" if len(names) > 1 else ""
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="harmless edits refused (false-positive rate)",
               ylabel="collapses caught (true-positive rate)",
               title=f"ROC for blow-ups {', '.join(names)}{same}\n"
                     f"{n['collapses']} of {n['collapses'] + n['harmless']} edits")
        if len(part):
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "one class only: no ROC", ha="center", va="center")
    fig.tight_layout()
    return fig
