"""Bad input against the real server: each bad request fails alone, with a message that names the problem.

Empty items, corrupt images and decompression bombs (a PNG header claiming 20000x20000 pixels) are rejected as
bad requests (HTTP 400 / gRPC INVALID_ARGUMENT, never retried); very long texts are truncated to the model's
token limit as in training. A thousand mixed requests from several threads leave the server healthy and every
good answer right.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from core.export.golden import GoldenSet
from serving.client import BadRequestError, ContentSafetyClient
from tests.images import png_header_only
from tests.serving.helpers import TOLERANCE, png_bytes

LONG_TEXT_CHARS = 20_000
MIXED_REQUESTS = 1000
BAD_SHARE = 0.05
THREADS = 8


CORRUPT_IMAGES = {
    "garbage": b"this is not an image at all",
    "truncated png": png_bytes(40, 40, 21)[:60],
    "png signature only": b"\x89PNG\r\n\x1a\n",
}


def _assert_matches_golden(client: ContentSafetyClient, golden: GoldenSet, row: int) -> None:
    prediction = client.classify_one(golden.texts[row], golden.images[row])
    scores = np.asarray(list(prediction.scores.values()), dtype=np.float32)
    np.testing.assert_allclose(scores, golden.probabilities[row], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_item_with_neither_text_nor_image_is_a_bad_request(client, text):
    with pytest.raises(BadRequestError, match="neither text nor image"):
        client.classify_one(text, None)
    with pytest.raises(BadRequestError, match="item 1: has neither text nor image"):
        client.classify(["fine", text], [None, b""])


def test_text_over_the_byte_cap_is_a_bad_request(client, exported_repository):
    from core.training.preprocessing import DEFAULT_MAX_TEXT_BYTES

    huge = "a " * (
        DEFAULT_MAX_TEXT_BYTES // 2 + 1
    )  # validation.text_max_bytes refuses it in training data too
    with pytest.raises(BadRequestError, match=r"item 1: text of 1000002 bytes exceeds the limit of 1000000"):
        client.classify(["fine", huge], [None, None])
    golden = exported_repository.golden
    _assert_matches_golden(client, golden, golden.indices("text-only")[0])


@pytest.mark.parametrize("kind", sorted(CORRUPT_IMAGES))
def test_corrupt_image_fails_only_its_request(client, exported_repository, kind):
    golden = exported_repository.golden
    with pytest.raises(BadRequestError, match="image rejected: undecodable"):
        client.classify_one("caption", CORRUPT_IMAGES[kind])
    _assert_matches_golden(client, golden, golden.indices("text+image")[0])
    with pytest.raises(BadRequestError, match="item 2: image rejected"):
        client.classify(["a", "b", "c"], [None, golden.images[5], CORRUPT_IMAGES[kind]])
    _assert_matches_golden(client, golden, golden.indices("image-only")[0])


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (20_000, r"too_large: .*400000000 pixels"),  # Pillow's own bomb guard fires when the header is read
        (6_000, r"too_large: 6000x6000 exceeds \d+ pixels"),  # under Pillow's guard: the project's limit
    ],
    ids=["20000px-pillow-guard", "6000px-project-limit"],
)
def test_decompression_bomb_is_rejected_from_its_header(client, exported_repository, side, message):
    bomb = png_header_only(side, side)
    assert len(bomb) < 100
    started = time.perf_counter()
    with pytest.raises(BadRequestError, match=r"item 0: image rejected: " + message):
        client.classify_one("look", bomb)
    # The pixels (up to 1.2 GB) were never decoded: the answer comes back at once.
    assert time.perf_counter() - started < 2.0
    golden = exported_repository.golden
    _assert_matches_golden(client, golden, golden.indices("image-only")[0])


def test_very_long_text_is_truncated_to_the_token_limit(client, exported_repository):
    from core.export.onnx_export import reference_probabilities
    from core.training.preprocessing import Preprocessor

    words = ("harmless", "words", "about", "the", "weather", "and", "some", "cats")
    long_text = " ".join(words[i % len(words)] for i in range(LONG_TEXT_CHARS // 5))[:LONG_TEXT_CHARS]
    assert len(long_text) == LONG_TEXT_CHARS
    # The same text cut after the last token the model keeps ([CLS] + limit-2 tokens + [SEP]).
    tokenizer = Preprocessor.from_model_dir(exported_repository.model_dir).tokenizer
    limit = exported_repository.max_text_length
    tokenizer.no_truncation()
    full = tokenizer.encode(long_text)
    cut_text = long_text[: full.offsets[limit - 2][1]]
    tokenizer.enable_truncation(max_length=limit)
    assert tokenizer.encode(cut_text).ids == tokenizer.encode(long_text).ids
    assert len(full.ids) > 100 * limit

    long_prediction, cut_prediction = client.classify([long_text, cut_text])
    assert long_prediction.scores == pytest.approx(cut_prediction.scores, abs=TOLERANCE)
    expected = reference_probabilities(
        exported_repository.model_dir,
        GoldenSet(["cut"], ["text-only"], [cut_text], [None], exported_repository.policies),
    )[0]
    scores = np.asarray(list(long_prediction.scores.values()), dtype=np.float32)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)


def test_thousand_mixed_requests_from_threads(triton_server, exported_repository):
    """5% bad requests at seeded random positions, sent from 8 threads over one gRPC client."""
    golden = exported_repository.golden
    rng = random.Random(1234)
    bad_kinds = {
        "empty": ("", None, "neither text nor image"),
        "corrupt": ("caption", CORRUPT_IMAGES["garbage"], "undecodable"),
        "truncated": (None, CORRUPT_IMAGES["truncated png"], "undecodable"),
        "bomb": ("look", png_header_only(20_000, 20_000), "too_large"),
    }
    bad_positions = set(rng.sample(range(MIXED_REQUESTS), int(MIXED_REQUESTS * BAD_SHARE)))
    plan: list[tuple[str, int | str]] = []
    for position in range(MIXED_REQUESTS):
        if position in bad_positions:
            plan.append(("bad", rng.choice(sorted(bad_kinds))))
        else:
            plan.append(("good", rng.randrange(len(golden))))

    def send(client: ContentSafetyClient, step: tuple[str, int | str]):
        kind, what = step
        if kind == "good":
            return client.classify_one(golden.texts[what], golden.images[what])
        text, image, _ = bad_kinds[what]
        try:
            client.classify_one(text, image)
        except BadRequestError as error:
            return error
        return None  # a bad request that was answered: caught below

    with ContentSafetyClient(triton_server.grpc_url, protocol="grpc", retries=0, timeout_s=60) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = list(pool.map(lambda step: send(client, step), plan))
        elapsed = time.perf_counter() - started

        good = bad = 0
        for (kind, what), answer in zip(plan, answers, strict=True):
            if kind == "good":
                scores = np.asarray(list(answer.scores.values()), dtype=np.float32)
                np.testing.assert_allclose(scores, golden.probabilities[what], rtol=0, atol=TOLERANCE)
                assert answer.model_version == "3"
                good += 1
            else:
                assert isinstance(answer, BadRequestError), (what, answer)
                assert bad_kinds[what][2] in str(answer)
                bad += 1
        assert (good, bad) == (950, 50)
        assert {what for kind, what in plan if kind == "bad"} == set(bad_kinds)

        assert client.is_ready()
        _assert_matches_golden(client, golden, 0)
    import tritonclient.http as httpclient

    health = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        assert health.is_server_live() and health.is_server_ready()
    finally:
        health.close()
    print(f"{MIXED_REQUESTS} requests from {THREADS} threads in {elapsed:.1f} s")
