"""Pipelines and CLI."""
