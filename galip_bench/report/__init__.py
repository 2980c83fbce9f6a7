"""`galip-bench report GRID`: tables (markdown, HTML, CSV, LaTeX) and plots of a grid, rebuilt from its run folders.

    paths = build_report(grid_root, out_dir, grid_name)   # {'report.md': Path, 'table.csv': ..., 'plots': [...]}
"""
import json
import time
from pathlib import Path

import pandas as pd

from galip_bench.files import atomic_write_text
from galip_bench.provenance import git_commit, library_versions
from galip_bench.report import differences, plots, tables
from galip_bench.report.html import report_html
from galip_bench.runs import results
from galip_bench.runs.rundir import RunDir

__all__ = ["build_report", "load_runs", "tables", "plots"]

RECIPE_CHANGED = plots.RECIPE_CHANGED  # the variant label's marker of a run made with --allow-recipe-change


def load_runs(grid_root, variant_order=None) -> tuple:
    """(runs, records, configs): results.collect / metric_records with the variant and seed filled from config.yaml
    where status.json lacks them (a run that never started); runs in the grid YAML's variant order when given."""
    runs = results.collect(grid_root)
    recs = results.metric_records(grid_root)
    configs = {p.name: RunDir(p).read_config() for p in results.run_dirs(grid_root)}
    statuses = {p.name: RunDir(p).status() for p in results.run_dirs(grid_root)}
    for run_id, config in configs.items():
        train = config.get("train") or {}
        if train.get("batch_size") and "processes" not in train:
            # written before processes were recorded: batch_size was the whole step of each of its processes
            train["global_batch"] = train["batch_size"] * int(statuses[run_id].get("world_size") or 1)
    if not runs.empty:
        runs["variant"] = [v if isinstance(v, str) else configs[r].get("variant", "default")
                           for r, v in zip(runs["run_id"], runs["variant"])]
        runs["seed"] = [int(s) if s == s and s is not None else int(configs[r].get("seed", 0))
                        for r, s in zip(runs["run_id"], runs["seed"])]
        runs["executor"] = [statuses[r].get("executor") for r in runs["run_id"]]
        order = {v: i for i, v in enumerate(variant_order or [])}
        rank = [(order.get(str(v).split(",")[0], len(order)), str(v), int(s))
                for v, s in zip(runs["variant"], runs["seed"])]
        runs = runs.iloc[sorted(range(len(runs)), key=lambda i: rank[i])].reset_index(drop=True)
    if not recs.empty:
        recs["variant"] = [v if isinstance(v, str) else configs[r].get("variant", "default")
                           for r, v in zip(recs["run_id"], recs["variant"])]
    labels = config_labels(runs, configs)  # runs of one variant under different configs never share a row
    for run_id in (runs["run_id"] if not runs.empty else []):  # --allow-recipe-change: labelled everywhere
        change = tables.run_recipe(configs.get(run_id))["recipe_change"]
        if change:
            base = labels.get(run_id, runs.loc[runs["run_id"] == run_id, "variant"].iloc[0])
            labels[run_id] = f"{base} [{RECIPE_CHANGED}: {change}]"
    if labels:
        runs["variant"] = [labels.get(r, v) for r, v in zip(runs["run_id"], runs["variant"])]
        if not recs.empty:
            recs["variant"] = [labels.get(r, v) for r, v in zip(recs["run_id"], recs["variant"])]
    return runs, recs, configs


def _flatten(tree, prefix="") -> dict:
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_labels(runs, configs) -> dict:
    """{run_id: 'variant [key=value, ...]'} for the runs of a variant whose resolved configs differ (other than by
    the seed): each configuration becomes its own row, labelled by what differs."""
    labels = {}
    if runs.empty:
        return labels
    for variant, ids in runs.groupby("variant", sort=False)["run_id"]:
        flat = {rid: {k: v for k, v in _flatten(configs.get(rid)).items() if k not in ("seed", "variant", "grid")}
                for rid in ids}
        keys = sorted(k for k in set().union(*flat.values())
                      if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1)
        for rid in (ids if keys else []):
            labels[rid] = f"{variant} [{', '.join(f'{k}={flat[rid].get(k)}' for k in keys)}]"
    return labels


def _subset(small, big) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(_subset(v, big.get(k)) for k, v in small.items())
    return small == big


def infer_profile(configs: dict):
    """The profile (galip_bench.config.profiles) every run's resolved config agrees with, if any."""
    from galip_bench.config.profiles import PROFILES
    found = [name for name, prof in PROFILES.items()
             if configs and all(_subset(prof, c) for c in configs.values())]
    return found[0] if found else None


def smoke_numbers(info, configs, recs) -> bool:
    """Whether any number of the report came from the smoke profile's stand-in extractors."""
    smoke_records = not recs.empty and any(isinstance(s, dict) and s.get("smoke") for s in recs["settings"])
    return info.get("profile") == "smoke" or infer_profile(configs) == "smoke" or bool(smoke_records)


def _settings_text(settings: dict) -> str:
    """Settings as markdown code spans (`key=value`): shown as written, never read as emphasis or links."""
    keep = {k: v for k, v in settings.items() if k not in ("protocol", "matches")}
    return ", ".join(tables.md_code(f"{k}={json.dumps(v, default=str)}") for k, v in keep.items())


def _what_was_run(grid, info, runs, recs, configs, refs) -> list:
    lines = ["## What was run", ""]
    executors = sorted({str(e) for e in runs["executor"].dropna()}) if not runs.empty else []
    commits = sorted({str(c) for c in recs.get("commit", pd.Series(dtype=object)).dropna()}) if not recs.empty else []
    lines += [f"- grid: `{grid}`" + (f" ({info['path']})" if info.get("path") else ""),
              *([f"- description: {tables.md_text(info['description'])}"] if info.get("description") else []),
              f"- profile: {info.get('profile') or infer_profile(configs) or 'none'}"
              + ("" if info.get("profile") or not infer_profile(configs) else " (inferred from the run configs)"),
              f"- executor: {', '.join(executors) or info.get('executor') or 'unknown'}",
              f"- runs: {len(runs)} ({tables.state_summary(runs) if not runs.empty else 'none'})",
              f"- commit: {', '.join(commits) if commits else 'not recorded by the runs'}; report built at commit "
              f"{git_commit(Path(__file__).parent) or 'unknown'} on "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
              "- library versions (report host): " + ", ".join(f"{k} {v}" for k, v in library_versions().items() if v)]
    evals = {json.dumps(c.get("eval"), sort_keys=True, default=str) for c in configs.values() if c.get("eval")}
    for e in sorted(evals):
        e = json.loads(e)
        plan = (f"fixed N={e['num_samples']}" if e.get("num_samples") else
                f"official, {e['passes']} pass(es)" if e.get("passes") else "each protocol's own (official)")
        lines.append(f"- eval config: protocols {', '.join(e.get('protocols') or [])}; plan {plan}, "
                     f"seed {e.get('seed')}, extractor {e.get('extractor')}, reference {e.get('reference')}")
    if smoke_numbers(info, configs, recs):
        lines.append("- **smoke profile**: small random-init extractors and the tiny CLIP; these numbers compare "
                     "only runs of this profile, never published numbers")
    lines += ["", "### Protocols", ""]
    if recs.empty:
        lines.append("No metric records yet.")
    else:
        for proto, g in recs.groupby("protocol", sort=True):
            distinct = {json.dumps(s, sort_keys=True, default=str) for s in g["settings"] if isinstance(s, dict)}
            matches = next((s.get("matches") for s in g["settings"] if isinstance(s, dict)), "")
            lines.append(f"- `{proto}`: {tables.md_text(matches)}")
            for s in sorted(distinct):
                lines.append(f"    - settings: {_settings_text(json.loads(s))}")
            if len(distinct) > 1:
                lines.append(f"  **warning**: runs of `{proto}` used {len(distinct)} different settings")
    return lines + [""]


def _runs_section(runs) -> list:
    lines = ["## Runs", "", "Failed and unfinished runs are listed (and marked in the tables), not hidden.", ""]
    if runs.empty:
        return lines + ["No runs.", ""]
    rows = []
    for r in runs.itertuples():
        state = r.state if r.state == "finished" else f"**{r.state}**"
        steps = f"{int(r.step or 0)}/{int(r.steps)}" if r.steps == r.steps and r.steps else f"{int(r.step or 0)}"
        rows.append({"run": r.run_id, "variant": tables.md_text(r.variant), "seed": r.seed, "state": state,
                     "step": steps, "error": tables.md_text((r.error or "")[:160])})
    return lines + [tables.markdown_table(pd.DataFrame(rows), escape=False), ""]


def budget_lines(runs, configs) -> list:
    """The training budget of the grid's runs as a fraction of the official run on their data (one line per
    distinct budget): steps = status.json's `steps` (the run's total), global batch from its config."""
    from galip_bench.config.recipe import describe_budget
    budgets = {}
    for r in (runs.itertuples() if not runs.empty else []):
        config = configs.get(r.run_id) or {}
        kind = (config.get("data") or {}).get("kind")
        steps = int(r.steps) if r.steps == r.steps and r.steps else None
        gb = tables.run_recipe(config)["global_batch"]
        text = (describe_budget(kind, steps, gb) if steps and gb else None) or (
            f"no official run to compare with (data {kind or 'unknown'})" if steps and gb else
            "not known (the run records no total steps or global batch)")
        budgets.setdefault(text, []).append(str(r.variant))
    if not budgets:
        return []
    lines = ["**Training budget** (samples trained, against the official GALIP run on the same data):"]
    for text, variants in budgets.items():
        names = ", ".join(dict.fromkeys(variants))
        lines.append(f"- {text}" + (f" ({names})" if len(budgets) > 1 else ""))
    return lines + [""]


SPLIT_REFERENCE_NOTE = ("Reference statistics: project-computed from the test split (`{ref}`), not GALIP's released "
                        "npz; numbers against them are comparable among these runs only, not to published ones.")


def _split_references(recs, proto) -> list:
    if recs.empty or "settings" not in recs:
        return []
    refs = {s.get("reference") for s in recs.loc[recs["protocol"] == proto, "settings"] if isinstance(s, dict)}
    return sorted(r for r in refs if isinstance(r, str) and r.startswith("split:"))


SELF_REFERENTIAL_NOTE = {
    True: ("CLIP: **self-referential** (`self_referential: true`): the metric's CLIP is the generator's own (GALIP "
           "trains with it), so the number partly grades the model by its own training signal; "
           "`clip_score_heldout` uses a CLIP the model did not train with."),
    False: "CLIP: held out (`self_referential: false`): not the CLIP the generator trains with."}


def _self_referential(recs, proto) -> list:
    """The note under a CLIP-based protocol's table: whether its CLIP is the generator's own (mixed: both said)."""
    if recs is None or recs.empty or "settings" not in recs:
        return []
    seen = {s.get("self_referential") for s in recs.loc[recs["protocol"] == proto, "settings"]
            if isinstance(s, dict) and "self_referential" in s}
    if len(seen) > 1:
        return ["CLIP: the runs differ in `self_referential` (the generator's own CLIP in some, not in others): the "
                "rows do not compare.", ""]
    return [SELF_REFERENTIAL_NOTE[bool(seen.pop())], ""] if seen else []


def _sampling_text(sampling: dict) -> str:
    k, p, c = sampling.get("top_k"), sampling.get("top_p"), sampling.get("candidates", 1)
    rerank = (f"{c} candidates per caption, the one {sampling.get('rerank_clip', 'its CLIP')} scores highest kept"
              if c > 1 else "1 candidate per caption (no reranking)")
    return (f"temperature {sampling.get('temperature', 1.0):g}, top-k {k if k is not None else 'off'}, top-p "
            f"{p if p is not None else 'off'}, {rerank}")


def _sampling_notes(recs, proto) -> list:
    """Lines under a table whose rows include a sampling model (CLIP-GEN): how each variant sampled, and a flag
    where its reranking CLIP is the metric's (the selection inflates that CLIP's score)."""
    if recs is None or recs.empty or "settings" not in recs:
        return []
    mine = recs[recs["protocol"] == proto]
    seen, flagged = {}, set()
    for variant, settings in zip(mine["variant"], mine["settings"]):
        if isinstance(settings, dict) and isinstance(settings.get("sampling"), dict):
            seen.setdefault(_sampling_text(settings["sampling"]), set()).add(variant)
            if settings.get("reranked_by_metric_clip"):
                flagged.add(variant)
    lines = [f"Sampling of {', '.join(f'`{v}`' for v in sorted(variants))}: {text}."
             for text, variants in seen.items()]
    if flagged:
        lines.append(f"**Reranked by this metric's CLIP** ({', '.join(f'`{v}`' for v in sorted(flagged))}: "
                     "`reranked_by_metric_clip: true`): of several candidates per caption the generator kept the one "
                     "this CLIP scores highest, so its number is inflated by the selection and does not compare with "
                     "a single-sample number.")
    return lines + [""] if lines else []


def _chance_levels(recs, proto) -> list:
    """The line under a table whose records carry a chance level (shapes_acc): each metric's, from its latest
    record (the plan fixes it: the same for every run of a grid)."""
    if recs is None or recs.empty or "chance" not in recs:
        return []
    mine = recs[(recs["protocol"] == proto) & recs["chance"].notna()]
    if mine.empty:
        return []
    levels = mine.sort_values("step").groupby("metric")["chance"].last()
    text = ", ".join(f"{m} {v:.3f}" for m, v in levels.items())
    return [f"Chance (a reader answering uniformly at random on the same captions): {text}.", ""]


def _results_section(table, grid, refs, smoke: bool = False, recs=None) -> list:
    lines = ["## Results", ""]
    if smoke:
        lines += ["**Smoke profile**: these numbers come from small random-init stand-in extractors and the tiny "
                  "CLIP; they compare only runs of this profile (and each protocol's stand-in is its own), never "
                  "published numbers.", ""]
    lines += [
             "Mean ± sample std (ddof=1) over the seeds of each variant's finished runs; `final`: the last "
             "evaluated step, `best`: the best value over evaluated steps (↓ lower is better, ↑ higher). "
             "† provisional: the variant has no finished run, its numbers come from unfinished (running or "
             "failed) runs. Published values (and Δ = ours − published) appear only where the record matches the "
             "published number's protocol settings, dataset, plan and N, reference and training recipe (global "
             "batch, length, precision, noise); otherwise the cell names the first setting that differs. Variants "
             f"marked `[{RECIPE_CHANGED}: ...]` ran with --allow-recipe-change and are never compared with a "
             "published number.", ""]
    if table.empty:
        return lines + ["No metric records yet.", ""]
    for proto in dict.fromkeys(table["protocol"]):
        lines += [f"### {proto}", "", tables.markdown_table(tables.protocol_frame(table, proto)), ""]
        for ref in _split_references(recs if recs is not None else pd.DataFrame(), proto):
            lines += [SPLIT_REFERENCE_NOTE.format(ref=ref), ""]
        lines += _self_referential(recs, proto) + _sampling_notes(recs, proto) + _chance_levels(recs, proto)
        notes = table[(table["protocol"] == proto) & (table["notes"] != "")]
        for r in notes.itertuples():
            lines.append(f"- {tables.md_text(r.variant)} / {r.metric}: {tables.md_text(r.notes)}")
        lines += [""] if len(notes) else []
    return lines


def _reference_text(r) -> str:
    plan = r["plan"] if r["plan"] == tables.NOT_STATED else _settings_text(r["plan"])
    recipe = r["recipe"] if r["recipe"] == tables.NOT_STATED else ", ".join(
        f"{k} {v}" for k, v in r["recipe"].items() if v is not None)
    return (f"- {r['variant']} / {r['metric']}: {r['value']:g} ({tables.md_text(r['label'])}; "
            f"{tables.md_text(r['source'])}, {r['url']}); dataset {r['dataset']}; protocol `{r['protocol']}`; plan: "
            f"{plan}; reference {tables.md_code(r['reference'])}; recipe: {tables.md_text(recipe)}")


def _references_section(grid, refs) -> list:
    mine = [r for r in refs["references"] if r["grid"] == grid]
    lines = ["## Paper references", ""]
    if mine:
        lines += [_reference_text(r) for r in mine]
        if any(tables.NOT_STATED in (r["plan"], r["recipe"]) for r in mine):
            lines += ["", f"Entries whose plan or recipe is '{tables.NOT_STATED}' are listed here only: the source "
                          "does not say what they were measured on, so they never stand beside a run."]
    else:
        lines.append(f"No published numbers recorded for grid `{grid}` (cells stay empty).")
    params = refs.get("parameters") or {}
    if params:
        lines += ["", "Official parameter counts (paper model; " + str(params.get("source", "")) + "): " +
                  ", ".join(f"{k} {v:,}" for k, v in params.items() if isinstance(v, int))]
    if refs.get("path"):
        lines.append(f"\nSource file: `{refs['path']}`.")
    return lines + [""]


NO_DATA = {"speed": "(no data: add `speed` to the grid's `eval.protocols` to time each run once at its end, or run "
                   "`galip-bench speed --checkpoint CKPT`)",
           "samples": "(no sample sheets: the runs wrote none; `train.sample_every` sets how often)",
           "curves": "(no metric records yet)", "bars": "(no metric records yet)"}


def _plots_section(made, out_dir) -> list:
    lines = ["## Plots", ""]
    titles = {"curves": "Metrics against training step", "bars": "Metrics across variants",
              "speed": "Speed against batch size", "samples": "Samples (fixed noise and captions)"}
    for kind, items in made.items():
        lines += [f"### {titles[kind]}", ""]
        if not items:
            lines += [NO_DATA.get(kind, "(no data)"), ""]
        for title, path in items:
            lines += [f"![{title}]({Path(path).relative_to(out_dir).as_posix()})", ""]
    return lines


def build_report(grid_root, out_dir, grid: str = None, info: dict = None, references=None, paired_resamples=None,
                 device=None) -> dict:
    """Write report.md, report.html, table.csv, table.tex, paired.csv, paired.tex and the PNGs under out_dir; return
    their paths. `paired_resamples`: {statistic: B} for the paired intervals (evaluation.paired.RESAMPLES);
    `device` where they are computed (default: a GPU when there is one)."""
    grid_root, out_dir = Path(grid_root), Path(out_dir)
    grid = grid or grid_root.name
    info = dict(info or {})
    refs = references if isinstance(references, dict) else tables.load_references(references)
    runs, recs, configs = load_runs(grid_root, info.get("variants"))
    table = tables.summarize(runs, recs, grid, refs["references"], configs)
    if not table.empty:  # said in every table (csv column, tex caption), as under the markdown tables
        table["reference_note"] = [
            f"project-computed reference ({', '.join(_split_references(recs, p))}), not GALIP's released npz"
            if _split_references(recs, p) else "" for p in table["protocol"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    made = plots.all_plots(runs, recs, table, grid_root, out_dir)
    baseline = differences.baseline_name(info, runs)
    pairs = differences.paired_table(runs, recs, grid_root, baseline, out_dir, paired_resamples, device=device)
    md = [f"# Report: {grid}", ""]
    md += budget_lines(runs, configs)
    md += _what_was_run(grid, info, runs, recs, configs, refs)
    md += _runs_section(runs)
    md += _results_section(table, grid, refs, smoke_numbers(info, configs, recs), recs)
    md += differences.markdown_section(pairs, baseline, paired_resamples, recs=recs)
    md += _references_section(grid, refs)
    md += _plots_section(made, out_dir)
    text = "\n".join(md).rstrip() + "\n"
    paths = {"report.md": atomic_write_text(out_dir / "report.md", text),
             "report.html": atomic_write_text(out_dir / "report.html",
                                              report_html(text, out_dir, f"galip-bench report: {grid}")),
             "table.csv": atomic_write_text(out_dir / "table.csv", table.to_csv(index=False)),
             "table.tex": atomic_write_text(out_dir / "table.tex", tables.latex_tables(table, grid) if not table.empty
                                            else f"% grid {grid}: no metric records yet\n"),
             "paired.csv": atomic_write_text(out_dir / "paired.csv", differences.csv_text(pairs)),
             "paired.tex": atomic_write_text(out_dir / "paired.tex",
                                             differences.latex_text(pairs, grid, baseline, paired_resamples))}
    paths["plots"] = [p for items in made.values() for _, p in items]
    paths["table"], paths["paired"] = table, pairs
    return paths
