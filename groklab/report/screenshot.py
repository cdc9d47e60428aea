"""Screenshot a report in headless Chromium, for people (and for checking the look):

    python -m groklab.report.screenshot RUN            # -> RUN/report.png (full page)
    python -m groklab.report.screenshot RUN/report.html --out shot.png --width 1000

Writes the report first if the run has none. Also prints what the page check saw (errors,
images that did not decode); exits 1 if there were any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groklab.report.browser import check_page, find_chromium, screenshot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m groklab.report.screenshot",
                                 description="Screenshot a groklab report in headless Chromium.")
    ap.add_argument("target", type=Path, help="a run directory, a comparison directory, or an "
                    "HTML file")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: beside the page)")
    ap.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    ap.add_argument("--height", type=int, default=None, help="default: the whole page")
    args = ap.parse_args(argv)
    if find_chromium() is None:
        print("groklab: error: no Chromium found; install it (Debian: apt-get install chromium) "
              "or set GROKLAB_CHROMIUM", file=sys.stderr)
        return 2
    page = args.target
    if page.is_dir():
        if not (page / "report.html").exists():
            from groklab.report import build_report
            from groklab.rundir import RunDirError

            try:
                build_report(page)
            except RunDirError as e:
                print(f"groklab: error: {e}", file=sys.stderr)
                return 2
        page = page / "report.html"
    if not page.is_file():
        print(f"groklab: error: '{page}' is not a report (no such file)", file=sys.stderr)
        return 2
    out = args.out or page.with_suffix(".png")
    check = check_page(page, width=args.width)
    bad = [i for i in check["images"] if not i["naturalWidth"]]
    shot = screenshot(page, out, width=args.width, height=args.height or
                      min(max(check["height"], 600), 16_000))
    print(f"screenshot: {shot} ({args.width} px wide, {len(check['images'])} figures, "
          f"{len(check['errors'])} errors)")
    for e in check["errors"] + check["external"]:
        print(f"  page error: {e}", file=sys.stderr)
    for i in bad:
        print(f"  figure did not decode: {i['alt']}", file=sys.stderr)
    return 1 if check["errors"] or check["external"] or bad else 0


if __name__ == "__main__":
    sys.exit(main())
