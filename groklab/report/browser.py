"""Open a report in headless Chromium: check that it loads cleanly, or take a screenshot.

Uses the distribution's Chromium (Debian: ``apt-get install chromium``) through its command
line only: ``--dump-dom`` for checks, ``--screenshot`` for pictures; no driver, no downloaded
browser. Every launch gets a fresh profile directory, and name resolution is mapped to nothing
(``--host-resolver-rules``), so a page that tried to reach the network would fail to load its
resource and the check would see the error.

A check runs a copy of the page with a small probe script appended: after the load event it
records every error event (script errors, resources that failed to load), every
``console.error``, every resource fetched from outside the page, and for each ``<img>`` whether it
decoded (``naturalWidth > 0``) and is displayed. The report itself contains no script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``$GROKLAB_CHROMIUM`` or the first Chromium on ``PATH``."""
    env = os.environ.get("GROKLAB_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _flags(profile: str) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
    ]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install it (Debian: apt-get install chromium) "
                                "or set GROKLAB_CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="groklab-chromium-") as profile:
        return subprocess.run([exe, *_flags(profile), *args], capture_output=True, text=True,
                              timeout=timeout)


PROBE = r"""
<script id="groklab-probe">
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target && e.target !== window ? (e.target.src || e.target.href || e.target.tagName)
                                          : (e.message || "error");
    errors.push("error: " + t);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + e.reason); });
  var ce = console.error;
  console.error = function () { errors.push("console: " + Array.prototype.join.call(arguments, " ")); ce.apply(console, arguments); };
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var external = performance.getEntriesByType("resource").map(function (r) { return r.name; })
      .filter(function (n) { return !/^data:/.test(n); });
    var out = {
      errors: errors, external: external, title: document.title,
      height: Math.ceil(document.documentElement.scrollHeight),
      images: imgs.map(function (i) {
        var r = i.getBoundingClientRect();
        return {alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth,
                naturalHeight: i.naturalHeight, shownWidth: Math.round(r.width),
                shownHeight: Math.round(r.height)};
      })
    };
    var pre = document.createElement("pre");
    pre.id = "groklab-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>
"""


def check_page(html_path: str | Path, *, width: int = 1280, timeout: float = 120) -> dict:
    """Load a copy of the page with the probe; returns ``{errors, external, images, height,
    title}`` as the browser saw them (see the module docstring)."""
    src = Path(html_path).read_text(encoding="utf-8")
    # The probe goes first in <head> so it sees errors raised while the page loads.
    probed = src.replace("<head>", "<head>" + PROBE, 1) if "<head>" in src else PROBE + src
    with tempfile.TemporaryDirectory(prefix="groklab-check-") as d:
        page = Path(d) / "page.html"
        page.write_text(probed, encoding="utf-8")
        proc = _run([f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom",
                     page.as_uri()], timeout)
    m = re.search(r'<pre id="groklab-check">(.*?)</pre>', proc.stdout, re.S)
    if m is None:
        raise RuntimeError(f"Chromium did not run the page probe (exit {proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-1:] or ''}")
    import html as _html

    return json.loads(_html.unescape(m.group(1)))


def screenshot(html_path: str | Path, png_path: str | Path, *, width: int = 1280,
               height: int | None = None, timeout: float = 120) -> Path:
    """A PNG of the page at ``width`` CSS pixels; the full page height unless ``height``."""
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    if height is None:
        height = min(max(check_page(html_path, width=width, timeout=timeout)["height"], 600),
                     16_000)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    proc = _run([f"--window-size={width},{height}", "--virtual-time-budget=5000",
                 f"--screenshot={png_path}", html_path.as_uri()], timeout)
    if not png_path.exists():
        raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode})")
    return png_path
