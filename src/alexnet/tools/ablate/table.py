"""The ablation table: per variant the final errors over seeds, the paired difference from the
baseline with its 95 % interval, whether the runs had converged, the cost; and a figure per study.

Paired: variant and baseline are trained with the same seeds (the same initial weights where the
architecture is the same, the same batches and augmentation draws), so the difference is taken seed
by seed, d_s = variant_s − baseline_s, with Student's t interval over those n differences
(:func:`alexnet.reporting.stats.paired`). A study's verdict is the interval's sign: an interval that
holds 0 shows no difference at this budget. Convergence: the mean change of each run's
per-epoch eval error (val, else training) over the last quarter of its epochs, to show whether the
curves had flattened.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from alexnet.atomic import atomic_write, write_json
from alexnet.errors import AlexNetError
from alexnet.reporting.figures import pyplot, write_figure
from alexnet.reporting.stats import format_mean_std, mean_std, paired
from alexnet.training.run_folder import RunFolder

TAIL = 0.25  # the share of the epochs whose change tells whether a run had converged


def final_errors(report: dict[str, Any], views: int) -> tuple[str, float, float]:
    """(which, top-1, top-5) of a run's report.json: test with the preset's views, else val."""
    final = report.get("final") or {}
    for key in (f"test_{views}view", "test_1view", f"val_{views}view", "val_1view"):
        if key in final:
            return key, final[key]["top1_error"], final[key]["top5_error"]
    raise AlexNetError(f"{report.get('run_dir')}: report.json has no final val or test errors")


def time_to_target(history: list[dict[str, Any]], target: float) -> tuple[float | None, float | None]:
    """(epochs, seconds of training) until the training top-1 error first reached ``target`` on
    :func:`race_curve`: to the tenth of an epoch where the run kept tenths (the seconds pro rata within
    that epoch), else to the epoch whose running error did."""
    for x, error in race_curve(history):
        if error <= target:
            epoch = math.ceil(x - 1e-9)
            seconds = {r["epoch"]: r.get("epoch_seconds", 0.0) for r in history}
            before = sum(v for e, v in seconds.items() if e < epoch)
            return x, before + (x - (epoch - 1)) * seconds[epoch]
    return None, None


def race_curve(history: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Fig. 1's curve: (epochs, training top-1 error) at each tenth of an epoch where the run kept
    tenths (the error over that tenth alone), else at each epoch's end (the epoch's running error)."""
    points: list[tuple[float, float]] = []
    for record in history:
        marks = record.get("train_top1_error_tenths") or []
        if marks:
            points += [(round(record["epoch"] - 1 + (k + 1) / len(marks), 6), e) for k, e in enumerate(marks) if e is not None]
        else:
            points.append((float(record["epoch"]), record["train_top1_error"]))
    return points


def curve(history: list[dict[str, Any]]) -> tuple[str, list[float]]:
    """The per-epoch eval error of a run: val top-1 where the run had a val split, else training top-1."""
    key = "val_top1_error" if history and all("val_top1_error" in r for r in history) else "train_top1_error"
    return key, [r[key] for r in history]


def tail_change(errors: list[float]) -> float | None:
    """The error's change over the last :data:`TAIL` of the epochs (final − at the start of the tail)."""
    if len(errors) < 4:
        return None
    return errors[-1] - errors[len(errors) - 1 - max(1, round(TAIL * len(errors)))]


def verdict(diff: dict[str, Any]) -> str:
    """"higher" / "lower" when the 95 % interval excludes 0, else "no difference shown"."""
    if diff["ci95"] is None:
        return "one seed: no interval"
    lo, hi = diff["ci95"]
    return "higher" if lo > 0 else "lower" if hi < 0 else "no difference shown"


def variant_row(study: str, variant, runs: list, target: float) -> dict[str, Any]:
    """One variant's finals per seed, its curves and (relu-tanh) its time to the target error."""
    top1, top5, wall, which, curves, tails, epochs, seconds, races = {}, {}, {}, set(), {}, [], {}, [], {}
    for r in runs:
        folder = RunFolder(r.folder, write=False)
        report, history = folder.read_report_json(), folder.read_metrics()
        key, top1[r.seed], top5[r.seed] = final_errors(report, r.config.eval_views)
        which.add(key)
        wall[str(r.folder)] = report.get("wall_seconds", 0.0)
        curve_key, curves[r.seed] = curve(history)
        if (change := tail_change(curves[r.seed])) is not None:
            tails.append(change)
        races[r.seed] = race_curve(history)
        n_epochs, secs = time_to_target(history, target)
        if n_epochs is not None:
            epochs[r.seed] = n_epochs
            seconds.append(secs)
    row = {"variant": variant.name, "note": variant.note, "overrides": list(variant.overrides),
           "same_as": runs[0].same_as if runs else None, "evaluated_on": sorted(which),
           "folders": sorted({str(r.folder) for r in runs}), "top1_by_seed": top1, "top5_by_seed": top5,
           "top1_error": mean_std(list(top1.values())), "top5_error": mean_std(list(top5.values())),
           "wall_by_folder": wall, "wall_seconds": mean_std(list(wall.values())), "curve": curve_key if runs else None, "curves": curves,
           "tail_change": mean_std(tails)}
    if study == "relu-tanh":
        row["to_target"] = {"reached": len(epochs), "runs": len(runs), "epochs_by_seed": epochs, "epochs": mean_std(list(epochs.values())),
                            "seconds": mean_std(seconds), "curves": races}
    return row


def tabulate(runs: list, options, studies: list[str], variants: dict[str, tuple]) -> dict[str, Any]:
    """The study table (ablation.json): rows per variant, paired differences from the first (the
    baseline), the total cost of the distinct runs."""
    table: dict[str, Any] = {"preset": options.preset, "seeds": options.seeds, "flags": {k: v for k, v in options.flags.items() if v is not None},
                             "overrides": options.overrides, "target_error": options.target_error, "tail": TAIL, "studies": {}}
    for study in studies:
        rows = [variant_row(study, v, [r for r in runs if r.study == study and r.variant == v], options.target_error) for v in variants[study]]
        base = rows[0]
        for row in rows:
            for k in ("top1", "top5"):
                row[f"paired_{k}"] = paired(base[f"{k}_by_seed"], row[f"{k}_by_seed"])
                row[f"delta_{k}"] = row[f"paired_{k}"]["mean"]
            row["verdict_top1"] = verdict(row["paired_top1"])
            if "to_target" in row:  # Fig. 1's race, paired by seed too (over the seeds where both reached the target)
                row["to_target"]["paired_epochs"] = paired(base["to_target"]["epochs_by_seed"], row["to_target"]["epochs_by_seed"])
        table["studies"][study] = rows
    seconds = {f: w for rows in table["studies"].values() for row in rows for f, w in row["wall_by_folder"].items()}  # a shared folder once
    table["runs"], table["cost_seconds"] = len(seconds), sum(seconds.values())
    return table


def _pm(stat: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    return format_mean_std(stat, scale, digits)  # in points


def _delta(diff: dict[str, Any], scale: float = 100.0) -> str:
    if diff["mean"] is None:
        return "–"
    if diff["ci95"] is None:
        return f"{scale * diff['mean']:+.2f}"
    lo, hi = diff["ci95"]
    return f"{scale * diff['mean']:+.2f} [{scale * lo:+.2f}, {scale * hi:+.2f}]"


def markdown(table: dict[str, Any]) -> str:
    flags = ", ".join(f"{k}={v}" for k, v in table["flags"].items())
    lines = [f"# Ablations: preset {table['preset']}, {table['seeds']} seed(s)" + (f", {flags}" if flags else ""), ""]
    if table["overrides"]:
        lines += [f"Common overrides: {', '.join(table['overrides'])}", ""]
    lines += ["Final error in %, mean ± std over seeds (n − 1). Δ = variant − baseline, paired by seed, in points, "
              "with its 95 % t interval; the verdict is the interval's sign. Tail = the mean change of the per-epoch "
              f"eval error over the last {100 * table['tail']:g} % of the epochs (≈ 0: the curve is flat).",
              "", f"{table['runs']} distinct runs, {table['cost_seconds'] / 60:.1f} min of training in all.", ""]
    for study, rows in table["studies"].items():
        lines += [f"## {study}", ""]
        relu = study == "relu-tanh"
        head = "| variant | top-1 error | top-5 error | Δ top-1 [95 % CI] | Δ top-5 [95 % CI] | top-1 vs baseline | tail |"
        rule = "|---|---|---|---|---|---|---|"
        if relu:
            head += f" epochs to {100 * table['target_error']:g} % train error | seconds to it |"
            rule += "---|---|"
        lines += [head, rule]
        for i, row in enumerate(rows):
            name = f"{row['variant']} ({row['note']})" + (f" = {row['same_as']}" if row["same_as"] else "")
            line = (f"| {name} | {_pm(row['top1_error'])} | {_pm(row['top5_error'])} | {_delta(row['paired_top1']) if i else '–'} | "
                    f"{_delta(row['paired_top5']) if i else '–'} | {row['verdict_top1'] if i else '–'} | {_pm(row['tail_change'])} |")
            if relu:
                t = row["to_target"]
                reached = "" if t["reached"] == t["runs"] else f" ({t['reached']}/{t['runs']} runs reached it)"
                paired_epochs = f" (Δ {_delta(t['paired_epochs'], 1.0)})" if i else ""
                line += f" {_pm(t['epochs'], 1.0, 1)}{reached}{paired_epochs} | {_pm(t['seconds'], 1.0, 1)} |"
            lines.append(line)
        where = sorted({w for row in rows for w in row["evaluated_on"]})
        curves = sorted({row["curve"] for row in rows if row["curve"]})
        lines += ["", f"Evaluated on: {', '.join(where)}; tail of {', '.join(curves)}. Figure: ablation-{study}.png.", ""]
    return "\n".join(lines)


def table_figure(table: dict[str, Any]):
    """One panel per study: bars of the mean top-1 error with ±std error bars, per variant."""
    plt = pyplot()
    names = list(table["studies"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 0.6, 3.4 * rows + 0.3), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_axis_off()
    for ax, study in zip(axes.flat, names):
        rows = table["studies"][study]
        means = [100 * (r["top1_error"]["mean"] or 0) for r in rows]
        stds = [100 * (r["top1_error"]["std"] or 0) for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=["#7f7f7f"] + ["#1f77b4"] * (len(rows) - 1))
        ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(study, fontsize=10)
        ax.set_ylabel("top-1 error (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"ablations, preset {table['preset']}: mean ± std over {table['seeds']} seed(s)", fontsize=11)
    fig.tight_layout()
    return fig


def study_figure(table: dict[str, Any], study: str):
    """A study's figure: left, each seed's final top-1 error per variant (a line joins one seed's
    runs: the pairing) with the mean and its 95 % interval; right, the mean per-epoch eval error of
    each variant (convergence), or for relu-tanh Fig. 1's race: the training error by tenth of an
    epoch, with the target."""
    plt = pyplot()
    rows = table["studies"][study]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    _pairs_panel(left, rows)
    race = study == "relu-tanh" and all((row.get("to_target") or {}).get("curves") for row in rows)
    if race:
        _race_panel(right, rows, table["target_error"])
    else:
        _curves_panel(right, rows)
    right.set_title(f"mean over {table['seeds']} seed(s)" + (", Fig. 1's race" if race else ""), fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(f"{study}, preset {table['preset']}", fontsize=11)
    fig.tight_layout()
    return fig


def _pairs_panel(ax, rows: list[dict[str, Any]]) -> None:
    seeds = sorted({s for row in rows for s in row["top1_by_seed"]})
    for s in seeds:
        xs = [i for i, row in enumerate(rows) if s in row["top1_by_seed"]]
        ax.plot(xs, [100 * rows[i]["top1_by_seed"][s] for i in xs], color="#bbbbbb", lw=0.8, marker="o", ms=3, zorder=1)
    for i, row in enumerate(rows):
        diff, mean = row["paired_top1"], row["top1_error"]["mean"]
        if mean is None:
            continue
        half = 0.0 if i == 0 or diff["ci95"] is None else 100 * (diff["ci95"][1] - diff["ci95"][0]) / 2
        ax.errorbar([i], [100 * mean], yerr=[half], fmt="D", color="#7f7f7f" if i == 0 else "#1f77b4", capsize=5, zorder=2)
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("final top-1 error (%)")
    ax.set_title("per seed (lines pair seeds); ◆ mean, bar: 95 % CI of Δ", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _curves_panel(ax, rows: list[dict[str, Any]]) -> None:
    for i, row in enumerate(rows):
        curves = [c for c in row["curves"].values() if c]
        if not curves:
            continue
        n = min(map(len, curves))
        mean = [100 * statistics.fmean(c[e] for c in curves) for e in range(n)]
        ax.plot(range(1, n + 1), mean, label=row["variant"], color="#7f7f7f" if i == 0 else None, lw=2 if i == 0 else 1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{(rows[0]['curve'] or 'error').replace('_', ' ')} (%)")


def _race_panel(ax, rows: list[dict[str, Any]], target: float) -> None:
    """Each variant's training error, the mean over its seeds at each point all of them have (the paper's
    Fig. 1 axes: training error against epochs), and the target as a dotted line."""
    for i, row in enumerate(rows):
        by_seed = [dict(map(tuple, c)) for c in row["to_target"]["curves"].values()]
        xs = sorted(set.intersection(*(set(c) for c in by_seed)))
        ax.plot(xs, [100 * statistics.fmean(c[x] for c in by_seed) for x in xs], label=row["variant"],
                color="#7f7f7f" if i == 0 else None, lw=2 if i == 0 else 1.2, ls="-" if i == 0 else "--")
    ax.axhline(100 * target, color="#d62728", lw=0.8, ls=":", label=f"{100 * target:g} % target")
    ax.set_xlabel("epochs")
    ax.set_ylabel("training top-1 error (%)")


def write_table(table: dict[str, Any], out: Path) -> None:
    """ablation.md, ablation.json, ablation.png and ablation-STUDY.png in ``out``, each written atomically."""
    atomic_write(out / "ablation.md", markdown(table))
    write_json(out / "ablation.json", table)
    for name, fig in [("ablation.png", table_figure(table)), *((f"ablation-{s}.png", study_figure(table, s)) for s in table["studies"])]:
        write_figure(fig, out / name)
