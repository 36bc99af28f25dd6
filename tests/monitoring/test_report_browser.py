"""The drift report as a browser shows it: a real check's `report.html` rendered by headless Chromium.

Chromium is required (Debian: `apt-get install chromium`; `make setup` installs it when run as root): without it
this test fails instead of skipping, so that CI cannot pass without having looked at the report.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.monitoring.records import START, records, write

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
)
WINDOW = (1280, 2000)
CHROMIUM_TIMEOUT_S = 60
DRIFT_BADGE_RGB = (0xC6, 0x28, 0x28)  # `.drift` in monitoring.drift_report.CSS


def chromium() -> str:
    """The Chromium executable, or a failure that says how to install it."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is needed to check the drift report and was not found on PATH "
        f"(looked for {', '.join(CHROMIUM_NAMES)}). Install it: as root on Debian/Ubuntu "
        "`apt-get update && apt-get install -y --no-install-recommends chromium` (`make setup` does this when "
        "run as root), or put a chromium / chromium-browser executable on PATH."
    )


def run_chromium(executable: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')[-3000:]}"
    )
    return done


def drift_report(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`report.html` of a real `run_drift_check`: 600 reference rows vs 600 rows with shifted text embeddings."""
    from datetime import timedelta

    from monitoring.check import DriftRequest, run_drift_check

    reference = write(root / "reference", records(600, 1))
    current = write(root / "current", records(600, 2, start=START + timedelta(days=1), text_shift=0.6))
    monkeypatch.setenv("TNS_HOME", str(root / "tns_home"))  # no MLflow store: the alias lookup is skipped
    outcome = run_drift_check(
        DriftRequest(
            reference=reference,
            current=current,
            out_dir=root / "out",
            workspace=root / "workspace",
            command="pytest test_report_browser",
        )
    )
    assert outcome.exit_code == 10, outcome.summary["reasons"]
    assert "text_embedding" in outcome.summary["drifted_signals"]
    return outcome.out_dir / "report.html"


@pytest.mark.timeout(180)
def test_report_renders_in_headless_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The screenshot is a real rendering (many colours, ink on the page, the red drift badge), and the DOM
    Chromium built holds every section of the report, the drifted signal and the model version."""
    from PIL import Image

    executable = chromium()  # first: a machine without Chromium fails at once, with how to install it
    url = drift_report(tmp_path / "check", monkeypatch).resolve().as_uri()
    screenshot = tmp_path / "report.png"
    run_chromium(
        executable,
        tmp_path / "profile-screenshot",
        f"--screenshot={screenshot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        url,
    )
    assert screenshot.is_file() and screenshot.stat().st_size > 0, "Chromium wrote no screenshot"
    with Image.open(screenshot) as opened:
        opened.load()
        image = opened.convert("RGB")
    assert image.size == WINDOW
    pixels = list(image.getdata())
    colours = set(pixels)
    ink = sum(1 for pixel in pixels if min(pixel) < 235) / len(pixels)
    assert len(colours) > 100, f"only {len(colours)} distinct colours: a blank or broken rendering"
    assert ink > 0.02, f"only {ink:.1%} of the page is not white"
    assert DRIFT_BADGE_RGB in colours, "the red 'drift' badge is not on the screenshot (CSS not applied?)"

    dom = run_chromium(executable, tmp_path / "profile-dom", "--dump-dom", url).stdout.decode("utf-8")
    for section in ("decision", "signals", "examples", "quality", "next"):
        assert f'id="{section}"' in dom, f"section #{section} missing from the rendered DOM"
    assert "Drift detected" in dom
    assert "text_embedding" in dom
    assert "content-safety version <b>3</b>" in dom
    assert "docs/runbook.md" in dom
