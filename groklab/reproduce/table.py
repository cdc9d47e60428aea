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


def demo_command(out, tiny: bool, progress: bool, out_console, console) -> None:
    """``groklab demo``: the demo study's runs (training, the circuit analyses), each run's
    story and report, the criteria table and the demo's report."""
    import json

    from groklab.report import build_report
    from groklab.report.reproduction import build_reproduction
    from groklab.report.story import story
    from groklab.reproduce.runner import reproduce
    from groklab.reproduce.studies import get

    study = get("demo")
    result = reproduce(study, "tiny" if tiny else "cpu", 1, out, progress=progress,
                       say=lambda line: console.print(line, highlight=False))
    for r in result.runs:
        run_dir = out / "runs" / r["name"]
        if r["status"] == "new":
            continue
        out_console.print(f"\n[bold]{r['label']}[/] ({r['preset']})", highlight=False)
        summary = json.loads((run_dir / "summary.json").read_text())
        for line in story(summary):
            out_console.print(line, highlight=False, soft_wrap=True)
        circuit = run_dir / "analysis" / "circuit_summary.txt"
        if circuit.is_file():
            out_console.print(circuit.read_text().rstrip(), highlight=False, soft_wrap=True)
        out_console.print(f"report: {build_report(run_dir)}", highlight=False)
    print_table(out_console, result)
    out_console.print(f"report: {build_reproduction(out)}", highlight=False)
