"""Reports: self-contained HTML that a browser renders with every figure, analyses picked up
by name, comparisons with steps-to-threshold, and the CLI around them."""

import base64
import io
import json
import re

import matplotlib.image as mpimg
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

import groklab
from groklab.cli import app
from groklab.config import load_config
from groklab.report import build_report
from groklab.report.browser import check_page, find_chromium
from groklab.report.story import story
from groklab.train.loop import train as train_run
from tests.conftest import TINY_SETS

runner = CliRunner()


def _train(out, *extra, steps=150):
    cfg = load_config("composition", None, [*TINY_SETS, "train.eval_every=25",
                                            f"train.steps={steps}", *extra])
    train_run(cfg, out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real tiny runs that differ only in the learning rate."""
    root = tmp_path_factory.mktemp("report_runs")
    return _train(root / "lr3e-3"), _train(root / "lr1e-2", "train.lr=1e-2")


def _analysis_png(path, title):
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.imshow([[0, 1], [1, 0]])
    ax.set_title(title)
    fig.savefig(path)


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([^"]+)"',
                                                    html)]


def test_report_is_self_contained_with_training_figures(runs):
    run = runs[0]
    path = build_report(run)
    html = path.read_text()
    # Self-contained: no script, no stylesheet link, nothing fetched from anywhere.
    assert "<script" not in html and "<link" not in html
    assert not re.search(r'(src|href)="(?!data:)', html)
    imgs = _images(html)
    assert len(imgs) == 4 and len(re.findall(r"<img ", html)) == 4
    for name in ("accuracy", "loss", "weight_norm", "lr"):
        png = run / "figures" / f"report_{name}.png"
        assert png.read_bytes() in imgs  # the PNG beside the page is the one embedded in it
        h, w, _ = mpimg.imread(io.BytesIO(png.read_bytes())).shape
        assert w > 400 and h > 200
    summary = json.loads((run / "summary.json").read_text())
    # Config and summary tables at the top, with the run's own numbers.
    for key in ("entities", "n_layers", "weight_decay", "test_id", "test_ood"):
        assert f">{key.replace('_', '_<wbr>')}<" in html or f"<b>{key}</b>" in html
    assert story(summary)[0] in html.replace("&#x27;", "'")
    mem = summary["memorization_step"]
    assert f'<div class="k">Memorized</div><div class="v">{f"step {mem:,}" if mem else "not yet"}' \
        in html


def test_analysis_figures_and_summaries_are_grouped_with_captions(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    figs = run / "figures"
    for stem in ("logit_lens_test_id", "logit_lens_over_training_test_id",
                 "causal_tracing_step_2000", "fourier_key_freqs", "forecast"):
        _analysis_png(figs / f"{stem}.png", stem)
    (run / "analysis").mkdir()
    (run / "analysis" / "logit_lens.json").write_text(json.dumps(
        {"bridge_layer": 2, "mrr": {"train_inferred": 0.91}}))
    build_report(run)
    html = (run / "report.html").read_text()
    assert len(_images(html)) == 4 + 5
    sections = re.findall(r'<h3 id="analysis-([a-z_]+)">', html)
    assert sections == ["logit_lens", "causal_tracing", "fourier", "forecast"]
    # Main figure before its variants; split names kept whole in captions.
    lens = html.index('id="analysis-logit_lens"')
    assert html.index("logit_lens_test_id.png", lens) < html.index(
        "logit_lens_over_training_test_id.png", lens)
    assert "over training \u00b7 test_id" in html and "step 2,000" in html
    assert "mrr.train_<wbr>inferred" in html and "0.91" in html


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed")
def test_report_renders_in_headless_chromium_with_every_figure(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    _analysis_png(run / "figures" / "logit_lens_test_id.png", "lens")
    page = build_report(run)
    seen = check_page(page)
    assert seen["errors"] == [] and seen["external"] == []
    assert len(seen["images"]) == 5
    for img in seen["images"]:
        assert img["complete"] and img["naturalWidth"] > 0 and img["naturalHeight"] > 0, img
        assert img["shownWidth"] > 100 and img["shownHeight"] > 50, img
    assert seen["title"] == "groklab \u00b7 run"


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed")
def test_check_page_sees_a_broken_image(tmp_path):
    """The browser check can fail: a figure that does not decode is reported."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head></head><body>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"></body></html>')
    seen = check_page(page)
    assert seen["images"][0]["naturalWidth"] == 0
    assert any("error" in e for e in seen["errors"])


def test_story_in_words():
    s = {"steps": 5000, "wall_time_s": 100.0, "steps_per_s": 50.0, "device": "cpu",
         "memorization_step": 200, "id_split": "test_id", "ood_split": "test_ood",
         "thresholds": {"test_id": {"0.5": 300, "0.95": 600},
                        "test_ood": {"0.5": None, "0.95": None}},
         "best": {"train": 1.0, "test_id": 0.99, "test_ood": 0.12},
         "final": {"train": 1.0, "test_id": 0.98, "test_ood": 0.05}, "status": "completed"}
    text = " ".join(story(s))
    assert "memorized its training set (train accuracy \u2265 0.99) at step 200" in text
    assert "(test_id \u2265 0.95) at step 600, 3.0\u00d7 the memorization step" in text
    assert "has not generalized out of distribution (test_ood): best accuracy 0.120" in text
    assert "trained 5,000 steps in 100 s (50.0 steps/s) on cpu" in text


def test_compare_overlays_runs_with_steps_to_threshold(runs, tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(runs[0]), str(runs[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "<script" not in html
    # Labels come from the one differing key; the sweep figure appears for a numeric key.
    assert "lr=0.003" in html and "lr=0.01" in html
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == ["compare_accuracy.png", "compare_loss.png", "compare_lr.png",
                     "compare_sweep.png", "compare_weight_norm.png"]
    assert len(_images(html)) == 5
    # One table row per run, with that run's memorization step.
    for run in runs:
        mem = json.loads((run / "summary.json").read_text())["memorization_step"]
        row = html[html.index(str(run)):].split("</tr>")[0]
        assert (f"<td>{mem:,}</td>" if mem else '<td class="none">') in row


@pytest.mark.parametrize("args, message", [
    (["report", "nowhere"], "not a groklab run directory"),
    (["compare", "{run}", "--out", "cmp"], "at least two run directories"),
    (["compare", "{run}", "nowhere", "--out", "cmp"], "not a groklab run directory"),
    (["compare", "{run}", "{run}", "--out", "{run}"], "is a run directory"),
])
def test_report_bad_input_is_one_line_exit_2(runs, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{run}", str(runs[0])) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


def test_demo_trains_analyzes_and_ends_with_the_reports(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--no-progress", "--tiny"])
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", "")
    assert f"report: {tmp_path / 'd' / 'report.html'}" in text
    assert "circuit summary: composition" in text and "memorized" in text
    assert (tmp_path / "d" / "report.html").stat().st_size > 10_000
    for run in ("modular-s0", "composition-s0"):
        assert (tmp_path / "d" / "runs" / run / "report.html").is_file()
    figures = {p.name for p in (tmp_path / "d" / "runs" / "composition-s0" / "figures").iterdir()}
    assert "circuit_over_training.png" in figures


def test_api_report_and_analyze(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    assert groklab.report(groklab.load_run(run)) == run / "report.html"
    with pytest.raises(ValueError, match="unknown analysis 'logit_len'; did you mean 'logit_lens'"):
        groklab.analyze(run, "logit_len")
    assert {"logit_lens", "causal_tracing", "fourier", "circuit"} <= set(groklab.analyses())
    result = groklab.analyze(run, "logit_lens", checkpoints="last", n_examples=20)
    assert result.ranks and "logit lens" in result.text()
    assert any(p.name.startswith("logit_lens") for p in (run / "figures").iterdir())
    assert (run / "analysis" / "logit_lens.npz").exists()
    groklab.report(run)
    assert 'id="analysis-logit_lens"' in (run / "report.html").read_text()
