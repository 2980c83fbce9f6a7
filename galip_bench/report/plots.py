"""Report plots (matplotlib, Agg, PNG): metric vs step per variant, bar chart per metric across variants, speed vs
batch size, and one sample sheet per variant with its fixed captions. Every file is written atomically."""
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from galip_bench.files import atomic_write  # noqa: E402
from galip_bench.runs.standin import LABEL as STAND_IN, is_stand_in  # noqa: E402

RECIPE_CHANGED = "recipe changed"  # in the variant label of a run made with --allow-recipe-change


def recipe_note(variants) -> str:
    """A plot title's second line when a plotted variant ran with a changed recipe (its label says how)."""
    changed = [str(v) for v in variants if f"[{RECIPE_CHANGED}:" in str(v)]
    return f"\n{RECIPE_CHANGED} (--allow-recipe-change): {', '.join(changed)}" if changed else ""


def stand_in_note(flags, what: str = "tiny random extractors") -> str:
    """A plot title's line when a plotted number came from a smoke stand-in (records' settings.smoke)."""
    return (f"\n{STAND_IN} numbers (smoke profile: {what}): compare only runs of the smoke profile"
            if any(bool(f) and f == f for f in flags) else "")


def _stand_in_records(g) -> list:
    return [is_stand_in(s) for s in g["settings"]] if "settings" in g else []


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def metric_curves(recs: pd.DataFrame, out_dir, order=()) -> list:
    """curve_<metric>.png: mean over seeds per step (band: ± std with several seeds), one line per variant, in the
    tables' variant order. Returns (title, path)s."""
    made = []
    if recs.empty:
        return made
    curves = recs[recs["protocol"] != "speed"].dropna(subset=["step", "value"])
    for metric, g in curves.groupby("metric", sort=True):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for variant in _ordered(g["variant"], order):
            stats = g[g["variant"] == variant].groupby("step")["value"].agg(["mean", "std", "count"]).sort_index()
            x, y = stats.index.to_numpy(float), stats["mean"].to_numpy(float)
            ax.plot(x, y, marker="o", ms=3, label=str(variant))
            if (stats["count"] > 1).any():
                sd = stats["std"].fillna(0).to_numpy(float)
                ax.fill_between(x, y - sd, y + sd, alpha=0.2)
        ax.set_xlabel("training step")
        standin = stand_in_note(_stand_in_records(g))
        ax.set_ylabel(metric + (f" [{STAND_IN}]" if standin else ""))
        ax.set_title(f"{metric} vs step (mean ± std over seeds)" + recipe_note(set(g["variant"])) + standin,
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        made.append((f"{metric} against training step", _save(fig, Path(out_dir) / f"curve_{safe_name(metric)}.png")))
    return made


def _ordered(values, order) -> list:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def metric_bars(table: pd.DataFrame, out_dir) -> list:
    """bar_<metric>.png: the final mean per variant as a dot on an axis fitted to the values (a bar from zero would
    hide differences such as 0.094 vs 0.110), ± std whiskers where there are several seeds, value labels; hollow
    dots: unfinished (provisional) variants."""
    made = []
    if table.empty:
        return made
    for metric, g in table[table["protocol"] != "speed"].groupby("metric", sort=False):
        g = g[g["final_mean"].notna()]
        if g.empty:
            continue
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(g) + 1.5), 3.6))
        x = np.arange(len(g))
        for xi, row in zip(x, g.itertuples()):
            several = row.n_seeds > 1 and row.final_std == row.final_std
            ax.errorbar(xi, row.final_mean, yerr=row.final_std if several else None, fmt="o", ms=7,
                        capsize=4 if several else 0, color="#4C72B0",
                        markerfacecolor="white" if row.provisional else "#4C72B0")
            ax.annotate(f"{row.final_mean:.4g}", (xi, row.final_mean), textcoords="offset points", xytext=(8, -3),
                        fontsize=7)
        low = (g["final_mean"] - g["final_std"].fillna(0)).min()
        high = (g["final_mean"] + g["final_std"].fillna(0)).max()
        pad = (high - low) * 0.25 or abs(high) * 0.05 or 1.0
        ax.set_ylim(low - pad, high + pad)
        ax.set_xlim(-0.6, len(g) - 0.4)
        ax.set_xticks(x, [f"{v}\n(n={n})" for v, n in zip(g["variant"], g["n_seeds"])], fontsize=7)
        standin = stand_in_note(g["smoke_stand_in"] if "smoke_stand_in" in g else [])
        ax.set_ylabel(metric + (f" [{STAND_IN}]" if standin else ""))
        ax.set_title(f"{metric} at the final step (mean ± std over seeds; hollow: unfinished)"
                     + recipe_note(g["variant"]) + standin, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        made.append((f"{metric} across variants", _save(fig, Path(out_dir) / f"bar_{safe_name(metric)}.png")))
    return made


def speed_points(recs: pd.DataFrame) -> pd.DataFrame:
    """(variant, batch, img_s) points from `speed` records: a per-batch table (`per_batch` / `result.per_batch`) or
    per-batch metrics `img_s_b<N>` when present, else the latency (batch `latency_batch`) and throughput (batch
    `throughput_batch`) pair that the evaluator's speed records carry."""
    rows = []
    if recs.empty:
        return pd.DataFrame(columns=["variant", "run_id", "batch", "img_s"])
    speed = recs[recs["protocol"] == "speed"]
    for (variant, run_id), g in speed.groupby(["variant", "run_id"], sort=False):
        last = {m: float(v) for m, v in zip(g["metric"], g["value"])}
        per = {int(m[len("img_s_b"):]): v for m, v in last.items() if re.fullmatch(r"img_s_b\d+", m)}
        for col in ("per_batch", "result"):  # a full per-batch table (`galip-bench speed --out` keeps it in `result`)
            for value in (g[col] if col in g else []):
                table = value.get("per_batch", value) if isinstance(value, dict) else None
                for b, v in (table or {}).items():
                    if isinstance(v, dict) and "img_s" in v:
                        per[int(b)] = float(v["img_s"])
        if not per:
            if "latency_ms" in last and last["latency_ms"] > 0:
                b = int(last.get("latency_batch", 1))
                per[b] = b / (last["latency_ms"] / 1000.0)
            if "throughput_img_s" in last and "throughput_batch" in last:
                per[int(last["throughput_batch"])] = last["throughput_img_s"]
        rows += [{"variant": variant, "run_id": run_id, "batch": b, "img_s": v} for b, v in sorted(per.items())]
    return pd.DataFrame(rows, columns=["variant", "run_id", "batch", "img_s"])


def speed_plot(recs: pd.DataFrame, out_dir, order=()) -> list:
    points = speed_points(recs)
    if points.empty:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for variant in _ordered(points["variant"], order):
        stats = points[points["variant"] == variant].groupby("batch")["img_s"].mean().sort_index()
        ax.plot(stats.index, stats.values, marker="o", label=str(variant))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    standin = stand_in_note(_stand_in_records(recs[recs["protocol"] == "speed"]), "timings of the tiny model")
    ax.set_title("synthesis speed (text encoder + generator)" + recipe_note(set(points["variant"])) + standin,
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return [("speed against batch size", _save(fig, Path(out_dir) / "speed.png"))]


def latest_sample(run_dir):
    sheets = sorted(Path(run_dir, "samples").glob("step_*.png"))
    return sheets[-1] if sheets else None


def sample_sheets(runs: pd.DataFrame, grid_root, out_dir) -> list:
    """samples_<variant>.png: the latest sample sheet of the variant's first finished run (else its most advanced
    run), with the fixed captions printed under it."""
    made = []
    if runs.empty:
        return made
    for variant, g in runs.groupby("variant", sort=False):
        g = g.assign(_done=(g["state"] != "finished")).sort_values(["_done", "seed", "step"],
                                                                     ascending=[True, True, False])
        chosen = next(((r, latest_sample(Path(grid_root) / r.run_id)) for r in g.itertuples()
                       if latest_sample(Path(grid_root) / r.run_id)), None)
        if chosen is None:
            continue
        r, sheet = chosen
        captions_file = sheet.with_suffix(".txt")
        captions = captions_file.read_text().splitlines() if captions_file.exists() else []
        image = plt.imread(str(sheet))
        h, w = image.shape[:2]
        width = 8.0
        fig = plt.figure(figsize=(width, width * h / w + 0.22 * (len(captions) + 2)))
        img_frac = (width * h / w) / fig.get_figheight()
        ax = fig.add_axes([0, 1 - img_frac, 1, img_frac])
        ax.imshow(image)
        ax.axis("off")
        step = re.search(r"(\d+)", sheet.stem)
        title = f"{variant} (seed {r.seed}, run {r.run_id}, step {int(step.group(1)) if step else '?'}, {r.state})"
        title += recipe_note([variant])
        text = title + "\n" + "\n".join(f"{i + 1}. {c}" for i, c in enumerate(captions))
        fig.text(0.01, (1 - img_frac) - 0.01, text, va="top", ha="left", fontsize=7, family="monospace")
        made.append((f"samples: {variant}", _save(fig, Path(out_dir) / f"samples_{safe_name(variant)}.png")))
    return made


def all_plots(runs, recs, table, grid_root, out_dir) -> dict:
    """{'curves': [...], 'bars': [...], 'speed': [...], 'samples': [...]} of (title, path)."""
    order = list(dict.fromkeys(runs["variant"])) if not runs.empty else []  # the tables' variant order
    return {"curves": metric_curves(recs, out_dir, order), "bars": metric_bars(table, out_dir),
            "speed": speed_plot(recs, out_dir, order), "samples": sample_sheets(runs, grid_root, out_dir)}


__all__ = ["all_plots", "metric_curves", "metric_bars", "speed_plot", "speed_points", "sample_sheets"]
