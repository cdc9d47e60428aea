"""``report.html``: one self-contained page per run, and one per comparison of runs.

Self-contained means the file alone is the report: figures are embedded as base64 PNG data
URIs, the CSS is inline, there is no script and nothing is fetched from the network, so it can
be mailed, archived with the run, or opened on a machine without internet. The PNGs are also
written to ``figures/`` (``report_*.png``, ``compare_*.png``) for papers and slides.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path

from matplotlib.figure import Figure

from groklab.report import figures as F
from groklab.report.artifacts import AnalysisGroup, collect, flatten
from groklab.report.records import RunRecord, read_run
from groklab.report.story import story
from groklab.report.style import CSS, run_colors, split_colors, split_roles
from groklab.rundir import RunDirError, atomic_write_bytes, atomic_write_text
from groklab.train.summary import THRESHOLDS, first_step
from groklab.version import __version__

esc = html.escape


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, caption: str, alt: str, max_width: int = 0) -> str:
    """``max_width`` (pixels): never blow a small figure up past its own size."""
    style = f' style="max-width:{max_width}px"' if max_width else ""
    return (f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}"{style}>'
            f"<figcaption>{caption}</figcaption></figure>")


def _fmt(v) -> str:
    if v is None:
        return "\u2014"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _step(v) -> str:
    return '<td class="none">\u2014</td>' if v is None else f"<td>{v:,}</td>"


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` hold ready HTML cells (``<td>...</td>``)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f'<div class="tablewrap {cls}"><table><thead><tr>{th}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def kv_table(pairs: list[tuple[str, str]], cls: str = "") -> str:
    # <wbr> after underscores: long keys (weight_decay_warmup_steps) wrap between words.
    body = "".join(f"<tr><td>{esc(k).replace('_', '_<wbr>')}</td><td>{esc(v)}</td></tr>"
                   for k, v in pairs)
    return f'<div class="tablewrap {cls}"><table><tbody>{body}</tbody></table></div>'


def page(title: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{body}"
        f"<footer>groklab {esc(__version__)} \u00b7 written {stamp} \u00b7 "
        "self-contained: figures embedded, no scripts, no network</footer>"
        "</main></body></html>\n"
    )


# ----------------------------------------------------------------------------- one run


def _cards(rec: RunRecord) -> str:
    s = rec.summary
    best, final = s.get("best", {}), s.get("final", {})
    cards = []
    mem = s.get("memorization_step")
    cards.append(("Memorized", f"step {mem:,}" if mem else "not yet",
                  f"{s.get('memorization_split', 'train')} accuracy \u2265 0.99" if mem else
                  f"train best {best.get('train', 0):.3f}"))
    for role, label in (("id", "Generalized ID"), ("ood", "Out of distribution")):
        split = s.get(f"{role}_split")
        if not split:
            continue
        step = (s.get("thresholds", {}).get(split) or {}).get("0.95")
        if step:
            later = f" \u00b7 {step / mem:.1f}\u00d7 later" if mem and step > mem else ""
            cards.append((label, f"step {step:,}", f"{split} \u2265 0.95{later}"))
        else:
            cards.append((label, f"best {best.get(split, 0):.3f}",
                          f"{split} \u00b7 final {final.get(split, 0):.3f}"))
    if s.get("steps") is not None:
        rate = s.get("steps_per_s")
        cards.append(("Trained", f"{s['steps']:,} steps",
                      f"{s.get('wall_time_s', 0):,.0f} s"
                      + (f" \u00b7 {rate:.1f} steps/s" if rate else "")
                      + f" \u00b7 {s.get('device', '?')}"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div>'
        f'<div class="s">{esc(sub)}</div></div>' for k, v, sub in cards) + "</div>"


def _split_table(rec: RunRecord) -> str:
    s, rows = rec.summary, rec.rows
    splits = F.splits_of(rows, s)
    roles = split_roles(splits, s.get("id_split"), s.get("ood_split"))
    colors = split_colors(splits, s.get("id_split"), s.get("ood_split"))
    metric = s.get("metric", "acc")
    head = ["split", f"final {metric}", f"best {metric}"] + [f"first \u2265 {t}" for t in THRESHOLDS] \
        + ["final loss"]
    body = []
    for sp in splits:
        role = {"train": " (memorization)", "id": " (ID)", "ood": " (OOD)"}.get(roles[sp], "")
        name = f'<td><span class="swatch" style="background:{colors[sp]}"></span>' \
               f"<b>{esc(sp)}</b>{esc(role)}</td>" if roles[sp] != "other" else \
               f'<td><span class="swatch" style="background:{colors[sp]}"></span>{esc(sp)}</td>'
        fin = s.get("final", {}).get(sp)
        best = s.get("best", {}).get(sp)
        loss = s.get("final_loss", {}).get(sp)
        body.append([name, f"<td>{_fmt(fin)}</td>", f"<td>{_fmt(best)}</td>",
                     *(_step(first_step(rows, f"{metric}/{sp}", t)) for t in THRESHOLDS),
                     f"<td>{_fmt(loss)}</td>"])
    return table(head, body)


def _config_tables(rec: RunRecord) -> str:
    parts = []
    for group in ("task", "model", "train"):
        tree = rec.config.get(group) or {}
        pairs = [(k, _fmt(v)) for k, v in tree.items()]
        # A long group (train) continues in a second column so the page stays short.
        halves = [pairs] if len(pairs) <= 20 else [pairs[: (len(pairs) + 1) // 2],
                                                   pairs[(len(pairs) + 1) // 2:]]
        for i, half in enumerate(halves):
            title = group if i == 0 else "&nbsp;"
            parts.append(f"<div><h3>{title}</h3>{kv_table(half)}</div>")
    return '<div class="config">' + "".join(parts) + "</div>"


def _analysis_section(groups: list[AnalysisGroup]) -> str:
    if not groups:
        return ('<p class="note">No analyses in this run yet. <code>groklab analyze RUN ...</code> '
                "writes them to <code>analysis/</code> and <code>figures/</code>; run "
                "<code>groklab report RUN</code> again to include them.</p>")
    out = []
    for g in groups:
        out.append(f'<h3 id="analysis-{esc(g.name)}">{esc(g.title)}</h3>')
        if g.description:
            out.append(f'<p class="note">{esc(g.description)}</p>')
        # Wide (multi-panel) figures across the page, the others two by two, in name order.
        blocks: list[tuple[bool, list]] = []
        for f in g.figures:
            wide = f.wide or len(g.figures) == 1
            if blocks and blocks[-1][0] == wide:
                blocks[-1][1].append(f)
            else:
                blocks.append((wide, [f]))
        for wide, figs in blocks:
            out.append(f'<div class="{"grid1" if wide else "grid2"}">')
            for f in figs:
                out.append(figure_html(
                    f.path.read_bytes(),
                    f"{esc(f.caption)} \u00b7 <code>figures/{esc(f.path.name)}</code>",
                    f"{g.title}: {f.caption}", f.width))
            out.append("</div>")
        for name, content in g.summaries.items():
            pairs = flatten(content)
            shown = pairs[:40]
            more = f'<p class="note">{len(pairs) - len(shown)} more entries in ' \
                   f"<code>analysis/{esc(name)}</code></p>" if len(pairs) > len(shown) else ""
            half = (len(shown) + 1) // 2
            tables = kv_table(shown, "left") if len(shown) <= 8 else (
                f'<div class="kv2">{kv_table(shown[:half], "left")}'
                f'{kv_table(shown[half:], "left")}</div>')
            out.append(f'<p class="note">Summary from <code>analysis/{esc(name)}</code></p>'
                       f"{tables}{more}")
        files = g.arrays + g.large
        if files:
            out.append('<p class="note">Arrays: ' + ", ".join(
                f"<code>analysis/{esc(n)}</code>" for n in files) + "</p>")
    return "".join(out)


def _extra_summary(rec: RunRecord) -> str:
    """Summary fields written by later stages (e.g. a forecast), shown as they are."""
    known = {"steps", "wall_time_s", "memorization_step", "id_split", "ood_split",
             "generalization_step_id", "generalization_step_ood", "grokking_delay", "thresholds",
             "final", "final_loss", "best", "status", "task", "task_info", "steps_per_s", "device"}
    extra = {k: v for k, v in rec.summary.items() if k not in known}
    if not extra:
        return ""
    return "<h3>More from summary.json</h3>" + kv_table(flatten(extra))


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` and ``RUN/figures/report_*.png``; returns the report's path."""
    rec = read_run(run_dir)
    s = rec.summary
    pngs = {}
    for key, (make, _) in F.RUN_FIGURES.items():
        pngs[key] = png_bytes(make(rec.rows, s))
    status = s.get("status", "completed")
    task = (rec.config.get("task") or {}).get("name", s.get("task", "?"))
    model = rec.config.get("model") or {}
    arch = (f"{model.get('n_layers', '?')} layers \u00d7 d_model {model.get('d_model', '?')}"
            + (f", looped {model['n_loops']}\u00d7" if model.get("n_loops", 1) > 1 else ""))
    cap = {k: c for k, (_, c) in F.RUN_FIGURES.items()}
    body = [
        '<header class="top">',
        f'<div class="eyebrow">groklab run report \u00b7 task {esc(task)} \u00b7 {esc(arch)}</div>',
        f'<h1>{esc(rec.name)}<span class="badge {esc(status)}">{esc(status)}</span></h1>',
        f'<div class="command mono">{esc(rec.command)}</div>' if rec.command else "",
        "</header>",
        f'<div class="story">{esc(" ".join(story(s)))}</div>',
        _cards(rec),
        # The picture a run is judged by comes first; the tables right after it.
        '<div class="grid1">',
        figure_html(pngs["accuracy"], esc(cap["accuracy"]), "accuracy per split against steps"),
        "</div>",
        "<h2>Splits</h2>",
        _split_table(rec),
        _extra_summary(rec),
        "<h2>Configuration</h2>",
        _config_tables(rec),
        "<h2>Training curves</h2>",
        '<div class="grid1">',
        figure_html(pngs["loss"], esc(cap["loss"]), "loss per split against steps"),
        "</div>",
        '<div class="grid2">',
        figure_html(pngs["weight_norm"], esc(cap["weight_norm"]), "weight norm against steps"),
        figure_html(pngs["lr"], esc(cap["lr"]), "learning rate against steps"),
        "</div>",
        "<h2>Analyses</h2>",
        _analysis_section(collect(rec.path, tuple(F.splits_of(rec.rows, s)))),
    ]
    html = page(f"groklab \u00b7 {rec.name}", "".join(body))
    # Written only once the whole page is composed: an error above leaves the run untouched.
    for key, data in pngs.items():
        atomic_write_bytes(rec.path / "figures" / f"report_{key}.png", data)
    out = rec.path / "report.html"
    atomic_write_text(out, html)
    return out


# ----------------------------------------------------------------------------- comparisons


def _flat_config(tree: dict) -> dict[str, object]:
    return {f"{g}.{k}": (tuple(v) if isinstance(v, list) else v)
            for g in ("task", "model", "train") for k, v in (tree.get(g) or {}).items()}


def differing_keys(recs: list[RunRecord]) -> dict[str, list]:
    """Config keys (plus the device actually used) whose values differ between the runs."""
    flats = [_flat_config(r.config) for r in recs]
    for f, r in zip(flats, recs):
        f["device"] = r.summary.get("device")
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return {k: [f.get(k) for f in flats] for k in keys
            if len({repr(f.get(k)) for f in flats}) > 1}


def run_labels(recs: list[RunRecord], diff: dict[str, list]) -> list[str]:
    """``phi=5.4``-style labels from the differing keys; directory names when that is unclear."""
    keys = [k for k in diff if k != "device" or len(diff) == 1]
    if 0 < len(keys) <= 3:
        labels = [", ".join(f"{k.split('.')[-1]}={_fmt(diff[k][i])}" for k in keys)
                  for i in range(len(recs))]
        if len(set(labels)) == len(labels):
            return labels
    names = [r.name for r in recs]
    if len(set(names)) == len(names):
        return names
    return [str(r.path) for r in recs]


def _threshold_table(recs, labels, colors) -> str:
    head = ["run", "steps", "memorized"] + [f"ID \u2265 {t}" for t in THRESHOLDS] \
        + ["OOD \u2265 0.5", "OOD \u2265 0.95", "best ID", "best OOD", "delay", "steps/s"]
    body = []
    for rec, label, color in zip(recs, labels, colors):
        s = rec.summary
        idt = s.get("thresholds", {}).get(s.get("id_split")) or {}
        oodt = s.get("thresholds", {}).get(s.get("ood_split")) or {}
        best = s.get("best", {})
        delay = s.get("grokking_delay")
        body.append([
            f'<td class="run"><span class="swatch" style="background:{color}"></span>'
            f'<b>{esc(label)}</b><br><span class="note mono">{esc(str(rec.path))}</span></td>',
            _step(s.get("steps")), _step(s.get("memorization_step")),
            *(_step(idt.get(str(t))) for t in THRESHOLDS),
            _step(oodt.get("0.5")), _step(oodt.get("0.95")),
            f"<td>{_fmt(best.get(s.get('id_split')))}</td>",
            f"<td>{_fmt(best.get(s.get('ood_split')))}</td>",
            f"<td>{_fmt(delay)}\u00d7</td>" if delay else '<td class="none">\u2014</td>',
            f"<td>{_fmt(s.get('steps_per_s'))}</td>",
        ])
    return table(head, body)


def _sweep_key(diff: dict[str, list]) -> str | None:
    keys = [k for k in diff if k != "device"]
    if len(keys) == 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                              and math.isfinite(v) for v in diff[keys[0]]):
        return keys[0]
    return None


def build_compare(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Overlay several runs in ``OUT/report.html`` (+ ``OUT/figures/compare_*.png``)."""
    if len(run_dirs) < 2:
        raise RunDirError(f"compare needs at least two run directories, got {len(run_dirs)}")
    out_dir = Path(out_dir)
    if (out_dir / "config.yaml").exists():
        raise RunDirError(f"--out '{out_dir}' is a run directory; choose a new directory for the "
                          "comparison")
    recs = [read_run(p) for p in run_dirs]
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out '{out_dir}' exists and is not a directory")
    diff = differing_keys(recs)
    labels = run_labels(recs, diff)
    colors = run_colors(len(recs))
    sweep = _sweep_key(diff)
    if sweep:  # order a sweep by its value, so colors run dark to light along it
        order = sorted(range(len(recs)), key=lambda i: diff[sweep][i])
        recs, labels = [recs[i] for i in order], [labels[i] for i in order]
        diff = {k: [v[i] for i in order] for k, v in diff.items()}
    figs = {
        "accuracy": (F.compare_curves_figure(recs, labels, colors, "acc"),
                     "Accuracy of the train, ID and OOD splits of every run (log steps); dots: "
                     "memorization (train) and the first step at \u2265 0.95 (ID, OOD)."),
        "loss": (F.compare_curves_figure(recs, labels, colors, "loss"),
                 "Loss of the same splits (log\u2013log)."),
    }
    if sweep:
        figs["sweep"] = (F.sweep_figure(recs, sweep, diff[sweep]),
                         f"First step of memorization and of ID / OOD generalization against "
                         f"{sweep}; hollow markers at the top: not reached within the run.")
    figs["weight_norm"] = (F.compare_single_figure(recs, labels, colors, "weight_norm",
                                                   "Weight norm", "L2 norm of all parameters"),
                           "Weight norm of every run.")
    if "train.lr" in diff or "train.lr_schedule" in diff or "train.warmup_steps" in diff:
        figs["lr"] = (F.compare_single_figure(recs, labels, colors, "lr", "Learning rate",
                                              "learning rate"), "Learning rate schedules.")
    pngs = {k: png_bytes(f) for k, (f, _) in figs.items()}
    diff_rows = [[f"<td>{esc(label)}</td>", *(f"<td>{esc(_fmt(diff[k][i]))}</td>" for k in diff)]
                 for i, label in enumerate(labels)]
    stories = "".join(
        f'<p><span class="swatch" style="background:{c}"></span><b>{esc(lb)}</b>: '
        f"{esc(' '.join(story(r.summary)[:3]))}</p>" for r, lb, c in zip(recs, labels, colors))
    body = [
        '<header class="top"><div class="eyebrow">groklab comparison</div>',
        f"<h1>{len(recs)} runs" + (f" across {esc(sweep)}" if sweep else "") + "</h1></header>",
        "<h2>Steps to threshold</h2>",
        '<p class="note">First evaluated step at which each accuracy reached the threshold '
        "(\u2014: not reached); delay = ID \u2265 0.95 step / memorization step.</p>",
        _threshold_table(recs, labels, colors),
    ]
    if diff:
        body += ["<h2>What differs</h2>", table(["run", *map(esc, diff)], diff_rows)]
    body.append("<h2>Curves</h2>")
    small = [k for k in ("sweep", "weight_norm", "lr") if k in figs]
    for k, (_, caption) in figs.items():
        if k not in small:
            body.append(f'<div class="grid1">{figure_html(pngs[k], esc(caption), k)}</div>')
    body.append('<div class="grid2">' + "".join(
        figure_html(pngs[k], esc(figs[k][1]), k) for k in small) + "</div>")
    body += ["<h2>Each run</h2>", f'<div class="story">{stories}</div>']
    html = page(f"groklab comparison \u00b7 {len(recs)} runs", "".join(body))
    for k, data in pngs.items():
        atomic_write_bytes(out_dir / "figures" / f"compare_{k}.png", data)
    out = out_dir / "report.html"
    atomic_write_text(out, html)
    return out
