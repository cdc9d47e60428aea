"""The README's Python API example runs as written (with fewer training steps)."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_block() -> str:
    text = README.read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    code = python_api_block()
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 10
    # The only change: a short run (fewer steps, evaluations and checkpoints), so the example
    # takes seconds here.
    code, n = re.subn(r"steps=\d+", "steps=20, eval_per_decade=1, checkpoint_per_decade=1", code)
    assert n == 1
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    printed = out.getvalue().splitlines()
    run = tmp_path / "runs" / "api"
    assert printed[-1] == str(Path("runs/api/report.html"))
    assert "torch.Size([" in printed[0]
    assert (run / "summary.json").exists() and (run / "analysis" / "logit_lens.npz").exists()
    html = (run / "report.html").read_text()
    assert 'id="analysis-logit_lens"' in html
