"""The step table of `tns run training`: follows the KFP local runner's lines, keeps the full log."""

from __future__ import annotations

import io
import sys

from pipelines.progress import StepTable, runner_output

# Lines as the KFP 2.17 local runner and the trainer write them (colours included).
RUN = [
    "22:21:48.84 - INFO - Running pipeline: \x1b[95m'tns-training'\x1b[0m",
    "22:21:48.85 - INFO - Executing task \x1b[96m'ingest-data'\x1b[0m",
    '    {"inputs": {"parameterValues": {"data_uri": "/data"}}}',
    "22:21:52.60 - INFO - Task \x1b[96m'ingest-data'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "22:21:52.61 - INFO - Executing task \x1b[96m'train-model'\x1b[0m",
    "    epoch 1: train_loss=1.1350 validation_loss=1.0573 validation_macro_roc_auc=0.7095",
    "    epoch 2: train_loss=0.9816 validation_loss=0.9034 validation_macro_roc_auc=0.7911",
    "22:24:30.00 - INFO - Task \x1b[96m'train-model'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "22:24:30.10 - INFO - Executing task \x1b[96m'policy-metrics'\x1b[0m",
    "22:24:30.11 - INFO - Executing task \x1b[96m'policy-metrics'\x1b[0m",
    "22:24:30.20 - INFO - Task \x1b[96m'policy-metrics'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "22:24:30.21 - INFO - Executing task \x1b[96m'policy-metrics'\x1b[0m",
    "22:24:30.30 - INFO - Task \x1b[96m'policy-metrics'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "22:24:30.40 - INFO - Task \x1b[96m'policy-metrics'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "22:24:30.50 - INFO - Executing task \x1b[96m'gate-model'\x1b[0m",
    "22:24:40.00 - INFO - Task \x1b[96m'gate-model'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m",
]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def test_plain_output_is_one_line_per_step_and_the_log_is_whole():
    log, screen = io.StringIO(), io.StringIO()
    table = StepTable(log, screen, epochs=40, interactive=False, clock=Clock())
    table.start()
    for line in RUN:
        table.write(line[:20])  # the runner's writes do not end at line ends
        table.write(line[20:] + "\n")
    table.close_line()
    assert log.getvalue() == "".join(line + "\n" for line in RUN)
    lines = screen.getvalue().splitlines()
    assert lines[0].split() == ["step", "status", "elapsed"]
    assert [line.split()[0] for line in lines[1:]] == [
        "ingest-data",
        "train-model",
        "policy-metrics",
        "gate-model",
    ]
    assert "epoch 2/40, validation macro ROC-AUC 0.791" in lines[2] and "[" not in lines[2]
    assert "policy-metrics x3" in lines[3] and "success" in lines[3]
    assert "gate-model" in lines[4] and "failure" in lines[4]
    assert "\x1b" not in screen.getvalue() and "parameterValues" not in screen.getvalue()


def test_terminal_output_redraws_the_table_with_an_epoch_bar():
    screen = io.StringIO()
    table = StepTable(io.StringIO(), screen, epochs=4, interactive=True, clock=Clock())
    for line in RUN[:7]:
        table.write(line + "\n")
    shown = screen.getvalue()
    last = shown[shown.rindex("\x1b[") :]
    assert "\x1b[2K" in shown and "\x1b[2F" in shown  # cursor up over the previous table, lines cleared
    assert "[##########----------] epoch 2/4, validation macro ROC-AUC 0.791" in last
    assert "train-model" in last and "running" in last


def test_runner_output_replaces_and_restores_the_standard_streams(tmp_path):
    screen = io.StringIO()
    before = sys.stdout, sys.stderr
    with (tmp_path / "run.log").open("w", encoding="utf-8") as log, runner_output(log, 5, screen=screen):
        print(RUN[1])
        print("a warning", file=sys.stderr)
        print(RUN[3], end="")  # last line without a newline
    assert (sys.stdout, sys.stderr) == before
    assert (tmp_path / "run.log").read_text(encoding="utf-8") == f"{RUN[1]}\na warning\n{RUN[3]}\n"
    assert "ingest-data" in screen.getvalue() and "success" in screen.getvalue()
