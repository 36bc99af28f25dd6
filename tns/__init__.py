"""The `tns` command: one module per command group, argument parsing and printing only; the work is done by the
libraries below it (`pipelines`, `components`, `monitoring`, `serving`, `core`)."""
