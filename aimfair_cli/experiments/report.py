"""The study report: Markdown tables (mean ± std over seeds, paired differences against full fine-tuning with 95 %
intervals), figures (utility against fairness, metrics, cells, curves, samples, the mask's selection) and the
`--json` payload. The runs come from `aimfair_cli/experiments/catalogue.py`; nothing here trains or evaluates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..fairness.metrics import DEGENERATE_MARK, MSG_DEGENERATE_NOTE
from .catalogue import REFERENCE, TAB3_STUDY

TASK = "smiling_male"


def _pm(agg: dict[str, Any], key: str) -> str:
    v = agg[key]
    if not isinstance(v, dict):
        return f"{100 * v:.2f}"
    if agg["n_runs"] == 1:
        return f"{100 * v['mean']:.2f}"
    return f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}"


def summary_rows(runs: Sequence[Any], *, labels: bool = True) -> list[dict[str, str]]:
    """One table row per study row (its runs): mean ± std over seeds (percent; no ± for one seed). WST and STD are shown both ways
    when there are several seeds (mean of per-seed values, and from the mean cell accuracies as the paper does)."""
    rows = []
    mixed = any((getattr(s, "group_labels", "none"), getattr(s, "select", "overall")) != ("none", "overall")
                for s in runs)
    for s in runs:
        agg = s.aggregate()
        name = s.label if labels else s.name
        if agg["degenerate_runs"]:  # a constant predictor must never read as "perfectly fair"
            name += f" {DEGENERATE_MARK} ({agg['degenerate_runs']}/{agg['n_runs']} seeds)"
        row = {"strategy": name}
        if mixed:  # rows that read group labels, or chose their epoch otherwise, say so in the table itself
            row.update({"group labels": getattr(s, "group_labels", "none"), "select": getattr(s, "select", "overall")})
        row.update({"ACC": _pm(agg, "acc"), "WST": _pm(agg, "wst_mean_of_runs")})
        if agg["n_runs"] > 1:
            row["WST (min of mean cells)"] = _pm(agg, "wst_of_mean_cells")
        row.update({"EO": _pm(agg, "eo"), "EO worst": _pm(agg, "eo_worst"), "STD": _pm(agg, "std")})
        if agg["n_runs"] > 1:
            row["STD (std of mean cells)"] = _pm(agg, "std_of_mean_cells")
        rows.append(row)
    return rows


REFERENCE_WORDS = {"full": "full fine-tuning", "aimfair": "AIM-Fair"}


def reference_words(reference: str = REFERENCE) -> str:
    return REFERENCE_WORDS.get(reference, reference)


def _reference_of(name: str, reference: str) -> str:
    """The row `name` is paired with: the reference, at the same training-set ratio for rows "x@50"."""
    return reference + (name[name.index("@"):] if "@" in name else "")


def paired_vs_reference(runs: Sequence[Any], reference: str = REFERENCE) -> dict[str, dict[str, Any]]:
    """`metrics.paired` of every row's runs but the reference's against the reference's (full fine-tuning unless a study
    names another), seed by seed (nothing for rows whose reference the study lacks)."""
    from ..fairness.metrics import paired

    by_name = {s.name: s for s in runs}
    out = {}
    for s in runs:
        ref = by_name.get(_reference_of(s.name, reference))
        if ref is not None and ref is not s:
            out[s.name] = paired(s.metrics, ref.metrics)
    return out


def paired_rows(runs: Sequence[Any], *, labels: bool = True, reference: str = REFERENCE) -> list[dict[str, str]]:
    """One table row per study row: for ACC, WST, EO and STD, "mean diff [95 % CI] wins/n" against the reference, in
    percentage points ("—" for the interval with one seed)."""
    from ..fairness.metrics import PAIRED, format_paired

    comparisons = paired_vs_reference(runs, reference)
    rows = []
    for s in runs:
        if s.name not in comparisons:
            continue
        row = {"strategy": s.label if labels else s.name}
        for key, _ in PAIRED:
            t = format_paired(comparisons[s.name][key])
            row[key.upper()] = f"{t['diff']} {t['ci95']} {t['wins']}"
        rows.append(row)
    return rows


def distinguishable_text(runs: Sequence[Any], reference: str = REFERENCE) -> str:
    """In words: which paired differences against the reference have a 95 % interval that excludes 0."""
    from ..fairness.metrics import PAIRED, excludes_zero

    comparisons = paired_vs_reference(runs, reference)
    words = reference_words(reference)
    if not comparisons:
        return f"No {words} row: nothing is paired."
    n = len(next(s for s in runs if s.name in comparisons).metrics)
    if n == 1:
        return ("With one seed there is no interval, so no difference can be told from seed-to-seed noise; "
                "run more seeds (--seeds) for that.")
    found = []
    for s in runs:
        for key, better in PAIRED:
            entry = comparisons.get(s.name, {}).get(key)
            if entry is not None and excludes_zero(entry):
                verdict = "better" if entry["mean_diff"] * better > 0 else "worse"
                found.append(f"{s.label}: {key.upper()} {100 * entry['mean_diff']:+.2f} points ({verdict})")
    if not found:
        return (f"At {n} seeds no difference against {words} is distinguishable from zero: every 95 % "
                "interval contains 0.")
    return (f"At {n} seeds these differences against {words} are distinguishable from zero (95 % interval "
            "excludes 0): " + "; ".join(found) + ". Every other interval contains 0.")


VERDICT_METRICS = (("acc", +1), ("wst", +1), ("eo", -1))  # the paper's headline numbers


def row_verdict(entry: dict[str, Any]) -> tuple[str, list[str]]:
    """One row's paired comparison with full fine-tuning in the paper's terms: ("better" | "worse" | "mixed" |
    "indistinguishable", the metrics whose 95 % interval excludes 0, as "WST +3.10 [+1.02, +5.18]")."""
    from ..fairness.metrics import excludes_zero, format_paired

    better, worse, said = False, False, []
    for key, sign in VERDICT_METRICS:
        e = entry[key]
        if excludes_zero(e):
            t = format_paired(e)
            said.append(f"{key.upper()} {t['diff']} {t['ci95']}")
            better, worse = better or e["mean_diff"] * sign > 0, worse or e["mean_diff"] * sign < 0
    return ("mixed" if better and worse else "better" if better else "worse" if worse else "indistinguishable"), said


def verdict_lines(rows: Sequence[Any]) -> list[str]:
    """The report's opening: from the paired intervals against full fine-tuning, which rows beat it on ACC, WST or
    EO (and lose on none), which lose, which cannot be told apart at this number of seeds; and whether full
    fine-tuning repairs ERM's worst group, the premise the paper builds on."""
    comparisons = paired_vs_reference(rows)
    if not comparisons:
        return []
    n = len(next(r for r in rows if r.name == REFERENCE).metrics)
    if n == 1:
        return ["**Verdict:** one seed gives no interval, so no row can be told apart from full fine-tuning; run "
                "more seeds (`--seeds`, the paper uses 10).", ""]
    groups: dict[str, list[str]] = {"better": [], "worse": [], "mixed": [], "indistinguishable": []}
    for r in rows:
        if r.name in comparisons and r.name != "pretrained":
            kind, said = row_verdict(comparisons[r.name])
            groups[kind].append(r.label + (f" ({'; '.join(said)})" if said else ""))
    words = {"better": "Beat full fine-tuning", "worse": "Lose to full fine-tuning",
             "mixed": "Better on one metric, worse on another",
             "indistinguishable": f"Cannot be told apart from full fine-tuning at {n} seeds"}
    lines = [f"**Verdict** (paired with full fine-tuning seed by seed, {n} seeds; a row beats it where a 95 % "
             "interval of ACC, WST or EO excludes 0 in its favour and none against it):", ""]
    lines += [f"- {words[k]}: " + "; ".join(v) + "." for k, v in groups.items() if v]
    if "pretrained" in comparisons:
        from ..fairness.metrics import format_paired

        def flipped(e: dict[str, Any]) -> dict[str, str]:  # ERM − full as full − ERM
            ci = e["ci95"]
            return format_paired({**e, "mean_diff": -e["mean_diff"], "ci95": None if ci is None else [-ci[1], -ci[0]]})

        wst, eo = flipped(comparisons["pretrained"]["wst"]), flipped(comparisons["pretrained"]["eo"])
        lines.append(f"- The premise (full fine-tuning on balanced synthetic data repairs the biased model): full "
                     f"fine-tuning − ERM is WST {wst['diff']} {wst['ci95']}, EO {eo['diff']} {eo['ci95']}.")
    return lines + [""]


def paper_lines(rows: Sequence[Any]) -> list[str]:
    """Our rows beside the paper's Tab. 3 (CelebA Smiling/Male), for the rows the paper has."""
    from .paper import TAB3_CELEBA_SMILING_MALE as TAB3, TAB3_METRICS

    listed = [r for r in rows if r.name in TAB3]
    if not listed:
        return []
    keys = {"acc": "acc", "wst": "wst_mean_of_runs", "eo": "eo", "std": "std"}
    lines = ["For reference, the paper's Tab. 3 on **CelebA** (Smiling/Male, ResNet-18 at 224 px, 10 seeds) beside "
             "this benchmark's rows: the offline benchmark is a CPU stand-in, so compare directions, not levels.", "",
             "| row | ACC | WST | EO | STD | paper ACC | paper WST | paper EO | paper STD |", "|---|" + "---|" * 8]
    for r in listed:
        agg = r.aggregate()
        ours = " | ".join(f"{100 * agg[keys[k]]['mean']:.2f}" for k in TAB3_METRICS)
        lines.append(f"| {r.label} | {ours} | " + " | ".join(f"{v:.2f}" for v in TAB3[r.name]) + " |")
    return lines + [""]


def _training_curves(out: Path, runs: Sequence[Any]) -> list[str]:
    """Validation accuracy per epoch of seed 0's pretraining and fine-tunings, from their history files."""
    import csv

    from ..fairness.plots import line_chart

    series = {}
    for name in ["pretrain", *(s.name for s in runs if s.name not in ("pretrained", "freeze"))]:
        path = out / "seed0" / f"{name}.history.csv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                series[name] = [100 * float(r["val_acc"]) for r in csv.DictReader(fh) if r["val_acc"]]
    if not series:
        return []
    line_chart(out / "curves.png", title="Seed 0: validation accuracy per epoch (from <checkpoint>.history.csv)",
               series=series, ylabel="val acc %")
    return ["## Training curves", "", "![training curves](curves.png)", ""]


def _sample_grid(out: Path, task: Any, per_row: int = 8) -> list[str]:
    """Real training images against synthetic ones, one pair of rows per group: the domain gap at a glance."""
    from ..core.manifest import read_manifest
    from ..fairness.plots import image_grid

    real, synth = out / "data" / "train.csv", out / "synth" / "metadata.jsonl"
    if not (real.is_file() and synth.is_file()):
        return []
    real_m, synth_m = read_manifest(real), read_manifest(synth)
    rows = []
    for g in task.groups:
        def first(m):
            return [m.image_path(r) for r in m.rows
                    if int(r["target"]) == g.target and int(r["protected"]) == g.protected][:per_row]
        name = task.cell_name(g.target, g.protected)
        rows += [(f"real · {name}", first(real_m)), (f"synthetic · {name}", first(synth_m))]
    image_grid(out / "samples.png", rows)
    return ["## Real and synthetic images", "",
            "The first training images of each group, real (rendered photo style) above synthetic (procedural, "
            "from the contextual prompts): the domain gap the mask's Δ1 measures.", "",
            "![real and synthetic images per group](samples.png)", ""]


def _ci_half(values: Sequence[float]) -> float:
    """Half-width of the 95 % Student-t interval of the mean (0 with one value)."""
    from ..fairness.stats import mean_ci

    mean, ci = mean_ci(list(values))
    return 0.0 if ci is None else (ci[1] - ci[0]) / 2


def utility_fairness(out: Path, rows: Sequence[Any], *, name: str = "utility-fairness.png") -> list[str]:
    """The paper's Fig. 1 for these runs: ACC against WST and ACC against EO, one point per row, bars = 95 %
    intervals over seeds."""
    from ..fairness.plots import interval_scatter

    def point(r: Any, key: str) -> tuple[float, float, float, float]:
        acc = [100 * m.acc for m in r.metrics]
        other = [100 * getattr(m, key) for m in r.metrics]
        return sum(other) / len(other), _ci_half(other), sum(acc) / len(acc), _ci_half(acc)

    interval_scatter(out / name, [
        {"title": "Utility against worst-group accuracy", "xlabel": "WST % (higher is fairer)", "ylabel": "ACC %",
         "points": {r.label: point(r, "wst") for r in rows}},
        {"title": "Utility against equalized odds", "xlabel": "EO % (lower is fairer)", "ylabel": "ACC %",
         "points": {r.label: point(r, "eo") for r in rows}},
    ], limits=(0.0, 100.0))
    return ["## Utility against fairness", "",
            "One point per strategy (mean over seeds; bars: 95 % Student-t intervals over seeds, none with one seed), "
            "as the paper's Fig. 1: up is more accurate, right (WST) or left (EO) is fairer.", "",
            f"![utility against fairness]({name})", ""]


def label_use_lines(rows: Sequence[Any]) -> list[str]:
    """Which group labels each row's training read and how its epoch was chosen: one line when all rows agree."""
    uses = {(getattr(r, "group_labels", "none"), getattr(r, "select", "overall")) for r in rows}
    if len(uses) == 1:
        (labels, select), = uses
        return [f"Every row: group labels used {labels}; epoch chosen by {select} validation accuracy.", ""]
    return ["Group labels used (none, val: validation only, train: training) and the criterion that chose each "
            "row's epoch:", "", *(f"- {r.label}: method {r.method}, group labels {r.group_labels}, selection "
                                  f"{r.select}" for r in rows), ""]


def table_lines(rows: Sequence[Any], reference: str = REFERENCE) -> list[str]:
    """The summary table, then the paired table and its reading, for one study's rows."""
    from ..core.tasks import get_task
    from ..fairness.cells import CELLS
    from ..fairness.metrics import cell_key

    summary, prows = summary_rows(rows), paired_rows(rows, reference=reference)
    task = get_task(TASK)
    for row, r in zip(summary, rows):
        cells = r.aggregate()["cells"]
        row.update({task.cell_name(y, p): f"{100 * cells[cell_key(y, p)]['acc']:.2f}" for y, p in CELLS})
    cols = list(summary[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
             *("| " + " | ".join(r[c] for c in cols) + " |" for r in summary), ""]
    lines += label_use_lines(rows)
    if prows:
        lines += [f"Paired against {reference_words(reference)} (mean difference [95 % interval] wins/seeds, "
                  "percentage points):",
                  "", "| " + " | ".join(prows[0]) + " |", "|" + "---|" * len(prows[0]),
                  *("| " + " | ".join(r.values()) + " |" for r in prows), "",
                  distinguishable_text(rows, reference), ""]
    return lines


def topk_figure(out: Path, rows: Sequence[Any]) -> list[str]:
    """ACC, WST and EO against k with 95 % intervals (the paper's Fig. 5), from rows named k40, k45, ..."""
    from ..fairness.plots import interval_lines

    ks = [(int(r.name[1:]), r) for r in rows if r.name.startswith("k") and r.name[1:].isdigit()]
    if not ks:
        return []
    series = {label: [(sum(v) / len(v), _ci_half(v)) for v in ([100 * getattr(m, key) for m in r.metrics]
                                                               for _, r in ks)]
              for label, key in (("ACC", "acc"), ("WST", "wst"), ("EO", "eo"))}
    interval_lines(out / "topk.png", title="AIM-Fair against k (mean, 95 % interval over seeds)",
                   x=[k for k, _ in ks], series=series, xlabel="k (tensors in each of K1 and K2)",
                   limits=(0.0, 100.0))
    return ["![metrics against k](topk.png)", ""]


def study_sections(out: Path, studies: Sequence[Any], results: dict[str, list[Any]]) -> list[str]:
    """One section per study other than the main comparison: its table, paired table and figure."""
    lines: list[str] = []
    for study in studies:
        if study.name == "main":
            continue
        rows = results[study.name]
        lines += [f"## Study `{study.name}`: {study.title}", "", *table_lines(rows, study.reference)]
        if study.reference != REFERENCE:  # the comparison methods' studies: their own utility-vs-fairness figure
            lines += utility_fairness(out, rows, name=f"utility-fairness-{study.name}.png")
        if study.figure == "topk":
            lines += topk_figure(out, rows)
        details = [d for r in rows for d in r.detail]
        if details:
            lines += ["Chosen per seed on the validation set by worst-group accuracy (this uses group labels AIM-Fair "
                      "does not need, so it flatters these baselines):", "",
                      *(f"- {r.label}: " + "; ".join(r.detail) for r in rows if r.detail), ""]
    return lines


def study_json(studies: Sequence[Any], results: dict[str, list[Any]]) -> dict[str, Any]:
    """`{"studies": {NAME: {"title": .., "rows": [{"name", "label", "acc": {"mean", "std"}, "wst", "wst_of_mean_cells",
    "eo", "eo_worst", "std", "std_of_mean_cells", "cells", "paired_vs_full": {...}}]}}}` (fractions, not percent)."""
    payload: dict[str, Any] = {}
    for study in studies:
        rows = results[study.name]
        comparisons = paired_vs_reference(rows, study.reference)
        listed = []
        for r in rows:
            agg = r.aggregate()
            entry = {"name": r.name, "label": r.label, "method": r.method, "group_labels": r.group_labels,
                     "select": r.select, "n_seeds": agg["n_runs"], "acc": agg["acc"],
                     "wst": agg["wst_mean_of_runs"], "wst_of_mean_cells": agg["wst_of_mean_cells"], "eo": agg["eo"],
                     "eo_worst": agg["eo_worst"], "std": agg["std"], "std_of_mean_cells": agg["std_of_mean_cells"],
                     "cells": agg["cells"], "degenerate_runs": agg["degenerate_runs"]}
            if r.name in comparisons:
                entry[f"paired_vs_{study.reference}"] = {k: {"mean_diff": v["mean_diff"], "ci95": v["ci95"], "wins": v["wins"],
                                               "n": v["n"]} for k, v in comparisons[r.name].items()}
            if r.detail:
                entry["chosen"] = r.detail
            listed.append(entry)
        payload[study.name] = {"title": study.title, "rows": listed}
    return {"studies": payload}


def _main_section(out: Path, runs: Sequence[Any], blocks: Sequence[str]) -> list[str]:
    """The quick comparison (`aimfair demo` without --study): tables, paired table, metric and cell figures."""
    from ..core.tasks import get_task
    from ..fairness.cells import CELLS
    from ..fairness.metrics import cell_key
    from ..fairness.plots import bar_chart, bar_panels

    rows = summary_rows(runs)
    prows = paired_rows(runs)
    aggs = {s.name: s.aggregate() for s in runs}
    task = get_task(TASK)

    def panel(title: str, keys: dict[str, str]) -> dict[str, Any]:
        return dict(title=title, groups=list(keys),
                    series={s.name: [100 * aggs[s.name][k]["mean"] for k in keys.values()] for s in runs},
                    errors={s.name: [100 * aggs[s.name][k]["std"] for k in keys.values()] for s in runs})

    bar_panels(out / "metrics.png", [
        panel("Higher is better (mean ± std over seeds)", {"ACC": "acc", "WST": "wst_mean_of_runs"}),
        panel("Lower is better (mean ± std over seeds)", {"EO": "eo", "STD": "std"}),
    ], size=(620, 420))
    cell_names = [task.cell_name(y, s) for y, s in CELLS]
    bar_chart(out / "cells.png", title="Real test set: accuracy per cell (target · protected)", groups=cell_names,
              series={s.name: [100 * aggs[s.name]["cells"][cell_key(y, p)]["acc"] for y, p in CELLS]
                      for s in runs}, line=50.0)
    cols = list(rows[0])
    lines = [
        "## AIM-Fair against fine-tuning baselines", "",
        "Metrics on the real test set in percent, mean ± sample std over seeds. WST and STD are shown as the mean "
        "of each seed's value and, with several seeds, from the mean cell accuracies as the paper's released code "
        "does (WST = lowest mean cell, STD = population std of the mean cells).", "",
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
        *("| " + " | ".join(r[c_] for c_ in cols) + " |" for r in rows), "",
        "## Paired against full fine-tuning", "",
        "Every strategy ran on the same seeds as full fine-tuning, so each seed gives one difference (strategy − full "
        "fine-tuning, percentage points). Each cell: mean difference, its 95 % interval (Student t over seeds, "
        "n − 1 degrees of freedom; — with one seed), and the seeds on which the strategy beat full fine-tuning "
        "(higher ACC and WST, lower EO and STD are better).", "",
        "| " + " | ".join(prows[0]) + " |", "|" + "---|" * len(prows[0]),
        *("| " + " | ".join(r.values()) + " |" for r in prows), "",
        distinguishable_text(runs), "",
        "![metrics per strategy](metrics.png)", "",
    ]
    if any(a["degenerate_runs"] for a in aggs.values()):
        lines[-2] = f"{MSG_DEGENERATE_NOTE}.\n\n" + lines[-2]
    lines += [*_training_curves(out, runs), "## Accuracy per cell", "",
              "| strategy | " + " | ".join(cell_names) + " |", "|---|" + "---|" * len(cell_names),
              *(f"| {s.label} | " + " | ".join(f"{100 * aggs[s.name]['cells'][cell_key(y, p)]['acc']:.2f}"
                                                for y, p in CELLS) + " |" for s in runs), "",
              "![accuracy per cell](cells.png)", "", "The dashed line is chance (50 %).", "",
              "## What was fine-tuned", "",
              *(f"- {s.label}: " + "; ".join(s.detail) for s in runs if s.detail)]
    names = {s.name for s in runs}
    if "freeze-best" in names:
        lines.append(f"- The best single-block freeze is chosen per seed among {', '.join(blocks)} by worst-group "
                     "accuracy on the validation set (this uses group labels AIM-Fair does not need, so it flatters "
                     "the baseline).")
    if "opposite" in names:
        lines.append("- The opposite criterion, a control the paper lacks, fine-tunes at the same k the k tensors "
                     "*most* sensitive to the domain gap ∩ the k *least* sensitive to the bias (`finetune --mask "
                     "mask.safetensors --strategy opposite`). Where it does as well as AIM-Fair, the gradient ranking "
                     "adds nothing beyond how many tensors are updated.")
    return lines + [""]


def write_report(out: Path, *, intro: str, studies: Sequence[Any], results: dict[str, list[Any]],
                 mask_summary: Sequence[str], seeds: int, blocks: Sequence[str], commands: Sequence[str]) -> Path:
    """report.md in `out`: Fig. 1 (utility against fairness, for the Tab. 3 study when it ran, else the first
    study) first, then the main comparison and each study, the mask's selection and the commands that reproduce it
    all."""
    from ..core.fsio import atomic_write_text
    from ..core.tasks import get_task

    # Fig. 1 shows ways to train: the Tab. 3 study when it ran, else the first study's rows
    first = TAB3_STUDY if TAB3_STUDY in results else studies[0].name
    lines = ["# aimfair demo report", "", intro, "", *verdict_lines(results[studies[0].name]),
             *paper_lines(results[first]), *utility_fairness(out, results[first])]
    if "main" in results:
        lines += _main_section(out, results["main"], blocks)
    lines += study_sections(out, studies, results)
    lines += _sample_grid(out, get_task(TASK))
    lines += ["## Where the selection comes from", "",
              *(f"- {m}" for m in mask_summary), "",
              "One point per parameter tensor: Δ1 = mean |g_R − g_S1| (sensitivity to the real/synthetic domain gap) "
              "against Δ2 = mean |g_S1 − g_S2| (sensitivity to the bias). K1 = the k tensors left of the vertical line "
              "(smallest Δ1), K2 = the k above the horizontal line (largest Δ2); filled points are selected (K1 ∩ K2, "
              "the shaded corner). The legend counts the selected tensors per block.", "",
              *(f"![selection, seed {i}](selection-seed{i}.png)" for i in range(seeds)), "",
              "## Reproduce", "",
              "Every step above is one `aimfair` command; `commands.sh` in this folder lists them in order, made from "
              "the same step data that ran (each step's `<output>.step.json` records its command and inputs).", "",
              "```sh", *commands, "```", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
