"""`tns monitor ui`: the Evidently workspace UI on 127.0.0.1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.common.constants import EXIT_OK
from tns.common import command_group, port


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns monitor ui`."""
    monitor = command_group(commands, "monitor", "Monitoring tools.")
    ui = monitor.add_parser("ui", help="Serve the Evidently workspace UI on 127.0.0.1 until Ctrl-C.")
    ui.add_argument(
        "--workspace", type=Path, default=None, help="Workspace (default $TNS_HOME/monitoring/workspace)."
    )
    ui.add_argument("--port", type=port, default=8085, help="Port (default 8085).")
    ui.set_defaults(handler=_monitor_ui)


def _monitor_ui(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from core.common.env import tns_home

    workspace = (args.workspace or tns_home() / "monitoring" / "workspace").expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    executable = Path(sys.executable).with_name("evidently")
    command = [
        str(executable),
        "ui",
        "--workspace",
        str(workspace),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    print(f"Evidently UI for {workspace} on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.run(command, env=os.environ.copy(), check=False).returncode
    except KeyboardInterrupt:
        return EXIT_OK
