"""The model card as a browser shows it: headless Chromium renders the HTML card of a real evaluation, and its
embedded plots are real, non-blank PNGs (the card is one offline file; the Kubeflow UI shows the same HTML)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest

from core.evaluation.evaluate import evaluate_scores
from core.evaluation.gate import gate_decision
from core.evaluation.model_card_html import render_model_card_html
from tests.monitoring.test_report_browser import chromium, run_chromium
from tests.unit.test_evaluate import CONFIG, POLICIES, _card, _gate_config, crafted

WINDOW = (1280, 8000)
PLOT_BLUE = np.array([0x09, 0x69, 0xDA])  # the ROC / PR line colour of core.evaluation.plots


@pytest.mark.timeout(180)
def test_model_card_plots_render_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    executable = chromium()
    evaluation = evaluate_scores(crafted(0), crafted(1, ablations=False), POLICIES, CONFIG)
    page = render_model_card_html(
        evaluation, _card(), gate_decision(evaluation, None, POLICIES, _gate_config()).to_dict()
    )
    plots = re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt.split(":")[0] for alt, _ in plots] == POLICIES, "one figure per policy"
    blue_in_figures = 0
    for _, data in plots:
        with Image.open(io.BytesIO(base64.b64decode(data))) as figure:
            pixels = np.asarray(figure.convert("RGB"), dtype=np.int16)
        assert figure.size[0] >= 800 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "a blank plot"
        blue_in_figures += int((np.abs(pixels - PLOT_BLUE).sum(axis=2) < 40).sum())
    assert blue_in_figures > 100, "the figures hold no curves"

    card = tmp_path / "model_card.html"
    card.write_text(page, encoding="utf-8")
    screenshot = tmp_path / "card.png"
    run_chromium(
        executable,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        card.resolve().as_uri(),
    )
    with Image.open(screenshot) as opened:
        shown = np.asarray(opened.convert("RGB"), dtype=np.int16)
    blue = np.abs(shown - PLOT_BLUE).sum(axis=2) < 40
    assert blue.sum() > 0.5 * blue_in_figures, "the curves of the embedded plots are not on the rendered page"
    dom = run_chromium(executable, tmp_path / "profile-dom", "--dump-dom", card.resolve().as_uri()).stdout
    assert b"<h2>Plots</h2>" in dom and dom.count(b'class="plot"') == len(POLICIES)
