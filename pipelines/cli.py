"""The `tns` command line."""


def main() -> int:
    raise SystemExit(0)
