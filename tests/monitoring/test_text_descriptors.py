"""Text descriptors of the inference log: what they count, and linear time on adversarial text."""

from __future__ import annotations

import hashlib
import time

import pytest

from core.common.constants import MAX_TEXT_CHARS
from monitoring.schema import count_urls, text_features


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("see http://a.example/x and https://b.example", 2),
        ("www.example.org, bit.ly/abc and goo.gl/x", 3),
        ("EXAMPLE.COM/path", 1),
        ("a file called notes.com and a.io", 0),  # a domain without a path is not counted
        ("", 0),
    ],
)
def test_urls_are_counted_per_token(text, urls):
    assert count_urls(text) == urls


@pytest.mark.parametrize("pattern", ["a-", "a.", "http://", "-", "a" * 7 + ".co"])
def test_descriptors_take_linear_time_on_adversarial_text(pattern):
    """Finding: the URL pattern backtracked quadratically (42 s on 100,000 characters of "a-a-..."); a loose
    bound here, the figure is in docs/benchmarks.md."""
    text = (pattern * (100_000 // len(pattern) + 1))[:100_000]
    started = time.perf_counter()
    features = text_features(text)
    assert time.perf_counter() - started < 1.0
    assert features["text_length"] == 100_000  # the whole text's length and hash, the head's descriptors
    assert features["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_descriptors_read_the_first_max_text_chars():
    head = "visit http://a.example/x " * 10
    long = head + "x" * MAX_TEXT_CHARS + " http://never.example/counted"
    assert text_features(long)["text_url_count"] == text_features(head)["text_url_count"] == 10
