"""``DIR/report.html`` of a reproduction: the claims table, the runs' curves overlaid, and the
figures their analyses wrote. Reads ``DIR/reproduction.json`` and ``DIR/runs/*`` only."""

from __future__ import annotations

import json
from pathlib import Path

from groklab.report import figures as F
from groklab.report.html import esc, figure_html, page, png_bytes, table
from groklab.report.records import read_run
from groklab.report.style import run_colors
from groklab.rundir import RunDirError, atomic_write_bytes, atomic_write_text

VERDICT = {True: ("holds", "#1a7f37"), False: ("does not hold", "#cf222e"),
           None: ("not measured", "#9a6700")}
ANALYSIS_FIGURES = ("circuit_over_training.png", "fourier_progress.png", "fourier_spectra.png",
                    "length_grid.png", "injection.png")


def build_reproduction(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "reproduction.json"
    if not path.is_file():
        raise RunDirError(f"'{out_dir}' holds no reproduction.json; run groklab reproduce first")
    rep = json.loads(path.read_text())
    rows = []
    for c in rep["claims"]:
        word, color = VERDICT[c["holds"]]
        rows.append([f"<td>{esc(c['text'])}</td>",
                     f"<td>{esc(c['published'])}<br><small>{esc(c['source'])}</small></td>",
                     f"<td>{esc(c['measured'])}</td>",
                     f'<td style="color:{color};font-weight:600">{word}</td>'])
    body = ['<header class="top"><div class="eyebrow">groklab reproduce</div>',
            f"<h1>{esc(rep['title'])}</h1>",
            f"<p>--scale {esc(rep['scale'])}, {rep['seeds']} seed(s), "
            f"{rep['seconds'] / 60:.1f} min. A claim's threshold is the published one; at this "
            "scale it may not hold, and the table says so.</p></header>",
            "<h2>Claims</h2>", table(["claim", "published", "measured", "verdict"], rows, "claims")]
    recs, labels = [], []
    for r in rep["runs"]:
        try:
            recs.append(read_run(out_dir / "runs" / r["name"]))
            labels.append(r["label"])
        except RunDirError:
            continue
    failed = [r for r in rep["runs"] if r.get("error")]
    if failed:
        body.append("<h2>Runs that failed</h2>" + "".join(
            f"<p><b>{esc(r['label'])}</b>: {esc(r['error'])}</p>" for r in failed))
    pngs = {}
    if recs:
        pngs["accuracy"] = png_bytes(F.compare_curves_figure(recs, labels,
                                                             run_colors(len(recs)), "acc"))
        body += ["<h2>Curves</h2>", '<div class="grid1">' + figure_html(
            pngs["accuracy"], "Accuracy of every run's splits (log steps).", "accuracy")
                 + "</div>"]
    extra = [(rec, lb, rec.path / "figures" / f) for rec, lb in zip(recs, labels)
             for f in ANALYSIS_FIGURES if (rec.path / "figures" / f).is_file()]
    if extra:
        body.append("<h2>Analyses</h2>")
        body += [f'<div class="grid1">{figure_html(p.read_bytes(), esc(f"{lb}: {p.stem}"), p.stem)}'
                 "</div>" for _, lb, p in extra]
    for k, data in pngs.items():
        atomic_write_bytes(out_dir / "figures" / f"reproduce_{k}.png", data)
    out = out_dir / "report.html"
    atomic_write_text(out, page(f"groklab reproduce \u00b7 {rep['study']}", "".join(body)))
    return out
