"""One look for every figure and page: split colors, the matplotlib style, the page CSS.

A split keeps its color in every figure of a report and of a comparison: the training probe is
blue, the in-distribution split green, the out-of-distribution split red, whatever the task
calls them (``summary.json`` names them: ``id_split``, ``ood_split``). Other probes
(``atomic_id``, ``train_inferred``, ...) get muted colors so the three that tell the story
stand out.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines

import matplotlib.pyplot as plt  # noqa: E402

TRAIN = "#2f6db5"
ID = "#2a9d5c"
OOD = "#d1495b"
INK = "#22262e"
MUTED_INK = "#5d6470"
GRID = "#e3e6eb"
# Muted, distinguishable colors for the supporting probes, assigned in sorted-name order.
OTHER = ("#8a6fbf", "#e0a03a", "#4fa3b8", "#a7794f", "#c16fa6", "#7f8c3a", "#6b7a8f")

ROLE_LABEL = {"train": "train", "id": "ID", "ood": "OOD"}


def split_roles(splits: list[str], id_split: str | None, ood_split: str | None) -> dict[str, str]:
    """Each split's role: ``train``, ``id``, ``ood`` or ``other``."""
    roles = {}
    for s in splits:
        roles[s] = ("train" if s == "train" else "id" if s == id_split
                    else "ood" if s == ood_split else "other")
    return roles


def split_colors(splits: list[str], id_split: str | None, ood_split: str | None) -> dict[str, str]:
    roles = split_roles(splits, id_split, ood_split)
    others = sorted(s for s, r in roles.items() if r == "other")
    colors = {"train": TRAIN, "id": ID, "ood": OOD}
    return {s: colors[r] if r in colors else OTHER[others.index(s) % len(OTHER)]
            for s, r in roles.items()}


def run_colors(n: int) -> list[str]:
    """Colors for n overlaid runs: ordered (a sweep reads from dark to light)."""
    cmap = plt.get_cmap("viridis")
    if n == 1:
        return [matplotlib.colors.to_hex(cmap(0.35))]
    return [matplotlib.colors.to_hex(cmap(0.05 + 0.8 * i / (n - 1))) for i in range(n)]


RC = {
    "figure.dpi": 100,
    "savefig.dpi": 144,
    "font.size": 10.5,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 10.5,
    "axes.labelcolor": MUTED_INK,
    "axes.edgecolor": "#b8bec8",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.7,
    "xtick.color": MUTED_INK,
    "ytick.color": MUTED_INK,
    "text.color": INK,
    "legend.frameon": False,
    "legend.fontsize": 9.5,
    "lines.solid_capstyle": "round",
}


def style():
    """``with style(): ...`` draws in the report's look without touching global rcParams."""
    return plt.rc_context(RC)


CSS = """
:root {
  --ink: #22262e; --muted: #5d6470; --line: #e3e6eb; --bg: #f6f7f9; --card: #ffffff;
  --train: %(train)s; --id: %(id)s; --ood: %(ood)s; --accent: #2f6db5;
}
* { box-sizing: border-box; }
html { background: var(--bg); }
body {
  margin: 0; color: var(--ink); background: var(--bg);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", "Helvetica Neue", Arial,
        "DejaVu Sans", sans-serif;
  -webkit-font-smoothing: antialiased;
}
main { max-width: 1120px; margin: 0 auto; padding: 32px 28px 64px; }
header.top { margin-bottom: 18px; }
.eyebrow { font-size: 12px; letter-spacing: .08em; text-transform: uppercase; color: var(--muted); }
h1 { font-size: 28px; line-height: 1.2; margin: 4px 0 6px; font-weight: 650; }
h2 { font-size: 19px; margin: 36px 0 12px; font-weight: 620; padding-bottom: 6px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 15.5px; margin: 22px 0 6px; font-weight: 620; }
p { margin: 6px 0 10px; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
               monospace; font-size: 12.5px; }
.command { color: var(--muted); word-break: break-all; }
.badge { display: inline-block; font-size: 11.5px; font-weight: 600; padding: 1px 8px;
         border-radius: 999px; vertical-align: 3px; margin-left: 6px; background: #e8edf5;
         color: var(--accent); }
.badge.running { background: #fff3dc; color: #9a6400; }
.badge.diverged { background: #fde4e7; color: #a32436; }
.story { background: var(--card); border: 1px solid var(--line); border-left: 4px solid var(--id);
         border-radius: 8px; padding: 14px 18px; font-size: 15.5px; margin: 14px 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(165px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 10px 14px; }
.card .k { font-size: 12px; color: var(--muted); }
.card .v { font-size: 22px; font-weight: 640; line-height: 1.25; font-variant-numeric: tabular-nums; }
.card .s { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; width: 100%%; background: var(--card); font-size: 13.5px;
        font-variant-numeric: tabular-nums; }
.tablewrap { border: 1px solid var(--line); border-radius: 8px; overflow: auto; background: var(--card); }
th, td { padding: 6px 10px; text-align: right; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; background: #fafbfc; }
tr:last-child td { border-bottom: none; }
td:first-child, th:first-child { text-align: left; }
td.none { color: #aab0ba; }
td.run { white-space: normal; overflow-wrap: anywhere; min-width: 180px; max-width: 300px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 3px; margin-right: 7px;
          vertical-align: 0; }
.config { display: grid; grid-template-columns: repeat(auto-fit, minmax(235px, 1fr)); gap: 12px; }
.config h3 { margin: 0 0 6px; font-size: 13px; color: var(--muted); text-transform: uppercase;
             letter-spacing: .06em; }
.config td { font-size: 12.5px; padding: 3px 8px; }
.config td:first-child { white-space: normal; }
.kv2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 12px;
       align-items: start; }
.left td:last-child { text-align: left; white-space: normal; }
.claims td, .claims th { text-align: left; white-space: normal; vertical-align: top; }
.claims td:first-child { width: 32%%; } .claims td:nth-child(3) { width: 34%%; }
.config td:last-child { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px;
         padding: 10px 10px 8px; }
figure img { display: block; width: 100%%; height: auto; margin: 0 auto; }
figcaption { font-size: 12.5px; color: var(--muted); padding: 6px 4px 0; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px;
         margin: 12px 0; }
.grid1 > figure { margin: 12px 0; }
.note { font-size: 13px; color: var(--muted); }
footer { margin-top: 48px; font-size: 12px; color: var(--muted); }
""" % {"train": TRAIN, "id": ID, "ood": OOD}
