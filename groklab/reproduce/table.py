"""The reproduction table on the terminal (rich), and the list of studies."""

from __future__ import annotations

from rich.table import Table

VERDICT_STYLE = {True: "[green]holds[/]", False: "[red]does not hold[/]",
                 None: "[yellow]not measured[/]"}


def print_table(console, result) -> None:
    t = Table(title=f"{result.title} (--scale {result.scale}, {result.seeds} seed(s), "
                    f"{result.seconds / 60:.1f} min)", show_lines=True, title_justify="left")
    for col, kw in (("claim", {"ratio": 3}), ("published", {"ratio": 2}),
                    ("measured", {"ratio": 3}), ("holds", {"no_wrap": True})):
        t.add_column(col, overflow="fold", **kw)
    for c in result.claims:
        t.add_row(c.text, f"{c.published}\n[dim]{c.source}[/]", c.measured, VERDICT_STYLE[c.holds])
    console.print(t)
    failed = [r for r in result.runs if r["error"]]
    for r in failed:
        console.print(f"run {r['name']}: {r['error']}", highlight=False)
    held = sum(c.holds is True for c in result.claims)
    console.print(f"{held} of {len(result.claims)} claims hold; table: "
                  f"{result.out / 'reproduction.json'}", highlight=False)


def print_list(console, studies) -> None:
    for s in studies:
        times = ", ".join(f"{k} ~{v:g} min" for k, v in s.minutes.items())
        console.print(f"[bold]{s.name}[/]: {s.title} ({times})", highlight=False)
        console.print(f"  {s.description}", highlight=False)
        for c in s.claims:
            console.print(f"  - {c.text} [dim](published: {c.published}; {c.source})[/]",
                          highlight=False)


def command(name, scale, seeds, out, list_, out_console, console) -> None:
    """``groklab reproduce``: list the studies, or run one and print its table and report."""
    from groklab.reproduce.base import StudyError
    from groklab.reproduce.runner import reproduce
    from groklab.reproduce.studies import get, studies
    from groklab.report.reproduction import build_reproduction

    if list_:
        return print_list(out_console, studies().values())
    if name is None:
        raise StudyError("name a study, or --list to see them: " + ", ".join(studies()))
    study = get(name)
    console.print(f"reproducing {study.title} at --scale {scale} into {out} (about "
                  f"{study.minutes.get(scale, 1):g} min)", highlight=False)
    result = reproduce(study, scale, seeds, out,
                       say=lambda line: console.print(line, highlight=False))
    print_table(out_console, result)
    out_console.print(f"report: {build_reproduction(out)}", highlight=False)
