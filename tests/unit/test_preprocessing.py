"""Training/serving parity of preprocessing, and bounded image decoding.

The parity test trains a tiny model (one optimizer step) to get the exact `Preprocessor` that
`train_model` builds, saves the model, and compares what the model receives on the training path
(`encode_items` + `BatchRunner`) with what `Preprocessor.from_model_dir` (export and serving) produces for the
same raw (text, image bytes) pairs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.common.constants import (
    MODEL_SPEC,
    TENSOR_ATTENTION_MASK,
    TENSOR_HAS_IMAGE,
    TENSOR_HAS_TEXT,
    TENSOR_INPUT_IDS,
    TENSOR_NGRAM_IDS,
    TENSOR_PIXEL_VALUES,
)
from core.common.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from core.config.run import RunConfig
from core.data.split import read_split_frame
from core.training import trainer
from core.training.encoding import BatchRunner, encode_items
from core.training.model import load_model
from core.training.preprocessing import InvalidItem, PreprocessingSpec, Preprocessor
from tests.images import png_header_only

MAX_TEXT_LENGTH = 16
CNN_IMAGE_SIZE = 48
VIT_IMAGE_SIZE = 32  # from the tiny ViT's config, whatever train.image_size says


# Encoded images ------------------------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode)
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)


def _parity_pairs() -> list[tuple[str | None, bytes | None]]:
    long_text = " ".join(["supercalifragilistic antidisestablishmentarianism"] * 20)
    palette = _noise((5, 1), mode="L", seed=3).convert("P")
    return [
        ("Hello World 😂 https://bit.ly/3xYz", _encode(_noise((CNN_IMAGE_SIZE, CNN_IMAGE_SIZE), seed=1))),
        (long_text, _encode(_noise((VIT_IMAGE_SIZE, VIT_IMAGE_SIZE), seed=2))),
        (None, _encode(_noise((37, 23), mode="RGBA", seed=4))),  # image-only, odd size, alpha
        ("text only, no image", None),
        ("   ", _encode(_noise((300, 200), mode="L", seed=5), "JPEG")),  # blank text: no text
        ("Über straße ça va? ÇA VA!", _encode(palette)),  # 5x1 palette image
        ("cmyk", _encode(_noise((50, 70), mode="CMYK", seed=6), "JPEG")),
        (None, None),  # neither modality
    ]


def _write_items(folder: Path, pairs, policies: list[str]) -> pd.DataFrame:
    """Writes the images under `folder` and returns ingest-like rows referencing them."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (text, data) in enumerate(pairs):
        image = None
        if data is not None:
            image = f"images/item{index}.bin"
            (folder / image).write_bytes(data)
        rows.append({"id": f"p{index}", "text": text, "image": image, **dict.fromkeys(policies, 0)})
    return pd.DataFrame(rows)


# Trained tiny models, with the preprocessor train_model built ---------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset, tiny_text_encoder, tiny_vit_encoder):
    """{"cnn" | "vit": (model_dir, the Preprocessor instance train_model used)}."""
    dataset_dir, splits_dir = tiny_dataset
    frame = read_split_frame(dataset_dir, splits_dir)
    built: list[Preprocessor] = []

    class Recording(Preprocessor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "Preprocessor", Recording)
        for kind, image_encoder in (("cnn", "cnn"), ("vit", str(tiny_vit_encoder))):
            config = RunConfig().with_overrides(
                **{
                    "train.text_encoder": str(tiny_text_encoder),
                    "train.image_encoder": image_encoder,
                    "train.max_text_length": MAX_TEXT_LENGTH,
                    "train.image_size": CNN_IMAGE_SIZE,
                    "train.hidden_dim": 16,
                    "train.max_steps": 1,
                }
            )
            model_dir = tmp_path_factory.mktemp(f"parity_{kind}")
            trainer.train_model(dataset_dir, frame, config, model_dir)
            results[kind] = (model_dir, built[-1])
    assert len(built) == 2
    return results


@pytest.fixture(scope="module")
def parity_items(tmp_path_factory) -> tuple[Path, pd.DataFrame, list]:
    folder = tmp_path_factory.mktemp("parity_items")
    pairs = _parity_pairs()
    return folder, _write_items(folder, pairs, list(RunConfig().policies)), pairs


def _training_path(model, preprocessor: Preprocessor, folder: Path, frame: pd.DataFrame, freeze: bool):
    """What the model receives in training: encoder inputs captured by forward pre-hooks, and the logits."""
    policies = list(model.spec.policies)
    items = encode_items(model, preprocessor, folder, frame, policies, freeze, torch.device("cpu"), freeze)
    runner = BatchRunner(model, preprocessor, torch.device("cpu"), amp=False)
    seen: dict[str, tuple] = {}
    hooks = [
        model.text_encoder.register_forward_pre_hook(lambda _m, args: seen.__setitem__("text", args)),
        model.image_encoder.register_forward_pre_hook(lambda _m, args: seen.__setitem__("image", args)),
    ]
    try:
        with torch.no_grad():
            model.eval()
            logits = runner.logits(items, torch.arange(len(items)))
    finally:
        for hook in hooks:
            hook.remove()
    return items, seen, logits


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_training_and_serving_preprocessing_are_identical(trained, parity_items, kind):
    model_dir, training_preprocessor = trained[kind]
    folder, frame, pairs = parity_items
    serving_preprocessor = Preprocessor.from_model_dir(model_dir)
    expected_side = CNN_IMAGE_SIZE if kind == "cnn" else VIT_IMAGE_SIZE
    assert serving_preprocessor.spec == training_preprocessor.spec
    assert serving_preprocessor.spec.image_size == expected_side
    assert serving_preprocessor.spec.max_text_length == MAX_TEXT_LENGTH

    texts = [text for text, _ in pairs]
    images = [data for _, data in pairs]
    served = serving_preprocessor(texts, images)
    model = load_model(model_dir)
    items, seen, training_logits = _training_path(model, training_preprocessor, folder, frame, freeze=False)

    # Token ids and masks: what encode_items stores and what the text encoder is actually called with.
    assert np.array_equal(items.input_ids.numpy(), served[TENSOR_INPUT_IDS])
    assert np.array_equal(items.attention_mask.numpy(), served[TENSOR_ATTENTION_MASK])
    text_ids, text_mask = seen["text"]
    assert np.array_equal(text_ids.numpy(), served[TENSOR_INPUT_IDS])
    assert np.array_equal(text_mask.numpy(), served[TENSOR_ATTENTION_MASK])
    assert np.array_equal(items.has_text.numpy(), served[TENSOR_HAS_TEXT])
    assert np.array_equal(items.has_image.numpy(), served[TENSOR_HAS_IMAGE])
    assert served[TENSOR_HAS_TEXT].tolist() == [1, 1, 0, 1, 0, 1, 1, 0]
    assert served[TENSOR_HAS_IMAGE].tolist() == [1, 1, 1, 0, 1, 1, 1, 0]

    # Pixels: the normalised tensor the image encoder receives in training vs the serving tensor.
    (pixels,) = seen["image"]
    assert pixels.shape == served[TENSOR_PIXEL_VALUES].shape == (len(pairs), 3, expected_side, expected_side)
    assert served[TENSOR_PIXEL_VALUES].dtype == np.float32
    assert np.abs(pixels.numpy() - served[TENSOR_PIXEL_VALUES]).max() <= 1e-6
    assert not np.any(served[TENSOR_PIXEL_VALUES][3])  # no image: zeros
    assert served[TENSOR_PIXEL_VALUES][0].std() > 0.1  # a real image is not zeros

    # Long text is truncated to max_text_length tokens and still ends with [SEP].
    sep = serving_preprocessor.tokenizer.token_to_id("[SEP]")
    assert served[TENSOR_ATTENTION_MASK][1].sum() == MAX_TEXT_LENGTH
    assert served[TENSOR_INPUT_IDS].shape[1] == MAX_TEXT_LENGTH
    assert served[TENSOR_INPUT_IDS][1, MAX_TEXT_LENGTH - 1] == sep

    # The whole model on serving tensors gives the training-path logits.
    with torch.no_grad():
        serving_logits = model(**{name: torch.from_numpy(value) for name, value in served.items()})
    assert torch.allclose(serving_logits, training_logits, atol=1e-5)


def test_frozen_text_features_match_the_serving_text_path(trained, parity_items):
    model_dir, training_preprocessor = trained["cnn"]
    folder, frame, pairs = parity_items
    served = Preprocessor.from_model_dir(model_dir).encode_texts([text for text, _ in pairs])
    model = load_model(model_dir)
    items = encode_items(
        model, training_preprocessor, folder, frame, list(model.spec.policies), True, torch.device("cpu")
    )
    assert items.input_ids is None
    with torch.no_grad():
        expected = model.text_encoder(
            torch.from_numpy(served[TENSOR_INPUT_IDS]), torch.from_numpy(served[TENSOR_ATTENTION_MASK])
        )
    assert torch.allclose(items.text_features, expected, atol=1e-6)
    assert items.pixels.dtype == torch.uint8


def test_single_request_equals_its_row_in_a_batch(trained, parity_items):
    model_dir, _ = trained["cnn"]
    _, _, pairs = parity_items
    preprocessor = Preprocessor.from_model_dir(model_dir)
    batch = preprocessor([t for t, _ in pairs], [i for _, i in pairs])
    for row, (text, image) in enumerate(pairs):
        single = preprocessor([text], [image])
        width = single[TENSOR_INPUT_IDS].shape[1]
        assert np.array_equal(single[TENSOR_INPUT_IDS][0], batch[TENSOR_INPUT_IDS][row, :width])
        assert not batch[TENSOR_ATTENTION_MASK][row, width:].any()  # the rest is padding
        assert np.array_equal(single[TENSOR_PIXEL_VALUES][0], batch[TENSOR_PIXEL_VALUES][row])


def test_saved_spec_is_what_the_preprocessor_uses(trained):
    import json

    model_dir, _ = trained["vit"]
    saved = json.loads((model_dir / MODEL_SPEC).read_text(encoding="utf-8"))["preprocessing"]
    preprocessor = Preprocessor.from_model_dir(model_dir)
    assert saved["image_size"] == VIT_IMAGE_SIZE
    assert preprocessor.spec == PreprocessingSpec.from_dict(saved)
    assert preprocessor.spec.image_mean == (0.5, 0.5, 0.5)
    assert preprocessor.spec.max_image_pixels == RunConfig().validation.image_max_pixels
    assert preprocessor.spec.max_text_bytes == RunConfig().validation.text_max_bytes


def test_serving_refuses_a_text_over_the_byte_cap_and_truncates_long_ones(tiny_text_encoder):
    capped = Preprocessor(
        PreprocessingSpec(max_text_length=8, image_size=16, max_text_bytes=100),
        tiny_text_encoder / "tokenizer.json",
    )
    long_but_allowed = "word " * 20  # 100 bytes: over the token limit, truncated like in training
    tensors = capped.serving_inputs([long_but_allowed], [None])
    assert tensors[TENSOR_ATTENTION_MASK].sum() == 8
    with pytest.raises(InvalidItem, match="text of 102 bytes exceeds the limit of 100") as caught:
        capped.serving_inputs(["ok", "é" * 51], [None, None])
    assert caught.value.index == 1 and caught.value.reason == "too_large"


# Preprocessor units ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_preprocessor(tiny_text_encoder) -> Preprocessor:
    return Preprocessor(
        PreprocessingSpec(max_text_length=8, image_size=16), tiny_text_encoder / "tokenizer.json"
    )


def test_texts_pad_to_the_longest_in_the_batch(small_preprocessor):
    out = small_preprocessor.encode_texts(["a", "a b c", None, ""])
    assert out[TENSOR_INPUT_IDS].shape == (4, 5)  # [CLS] a b c [SEP]
    assert out[TENSOR_ATTENTION_MASK].sum(1).tolist() == [3, 5, 2, 2]
    assert out[TENSOR_HAS_TEXT].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert out[TENSOR_INPUT_IDS][0, 3:].tolist() == [0, 0]  # pad id
    assert out[TENSOR_INPUT_IDS].dtype == np.int64 and out[TENSOR_ATTENTION_MASK].dtype == np.int64


def test_images_are_resized_and_normalised(small_preprocessor):
    white, black = Image.new("RGB", (16, 16), (255, 255, 255)), Image.new("RGB", (40, 10), (0, 0, 0))
    out = small_preprocessor.encode_images([_encode(white), _encode(black), None, b""])
    values = out[TENSOR_PIXEL_VALUES]
    assert values.shape == (4, 3, 16, 16)
    assert np.all(values[0] == 1.0) and np.all(values[1] == -1.0)
    assert not values[2].any() and not values[3].any()
    assert out[TENSOR_HAS_IMAGE].tolist() == [1.0, 1.0, 0.0, 0.0]
    raw = small_preprocessor.image_to_uint8(_encode(_noise((16, 16), seed=9)))
    assert raw.dtype == np.uint8 and raw.shape == (3, 16, 16)
    assert np.array_equal(raw, np.asarray(_noise((16, 16), seed=9)).transpose(2, 0, 1))  # no resize at size


def test_call_checks_lengths_and_handles_empty_batches(small_preprocessor):
    with pytest.raises(ValueError, match="2 texts and 1 images"):
        small_preprocessor(["a", "b"], [None])
    empty = small_preprocessor([], [])
    assert empty[TENSOR_INPUT_IDS].shape[0] == 0
    assert empty[TENSOR_PIXEL_VALUES].shape == (0, 3, 16, 16)


def test_preprocessor_rejects_a_decompression_bomb_naming_the_item(small_preprocessor):
    with pytest.raises(InvalidItem, match="item 1: image rejected: too_large") as caught:
        small_preprocessor([None, "x"], [b"", png_header_only(6000, 6000)])
    assert caught.value.reason == "too_large" and caught.value.index == 1


def test_serving_inputs_pad_to_the_text_limit_and_shape_flags_for_triton(small_preprocessor):
    texts, images = (
        ["short", "a much longer text " * 40, None],
        [None, _encode(_noise((20, 10))), _encode(_noise((9, 9)))],
    )
    served = small_preprocessor.serving_inputs(texts, images)
    trained = small_preprocessor(texts, images)
    limit = small_preprocessor.spec.max_text_length
    assert served[TENSOR_INPUT_IDS].shape == (3, limit)
    width = trained[TENSOR_INPUT_IDS].shape[1]
    # Same tokens as training (long text truncated to the limit), padding only added on the right.
    assert width == limit
    np.testing.assert_array_equal(served[TENSOR_INPUT_IDS][:, :width], trained[TENSOR_INPUT_IDS])
    np.testing.assert_array_equal(served[TENSOR_PIXEL_VALUES], trained[TENSOR_PIXEL_VALUES])
    assert served[TENSOR_HAS_TEXT].shape == (3, 1) and served[TENSOR_HAS_TEXT].ravel().tolist() == [1, 1, 0]
    assert served[TENSOR_HAS_IMAGE].ravel().tolist() == [0, 1, 1]


def test_serving_inputs_name_the_item_without_text_or_image(small_preprocessor):
    with pytest.raises(InvalidItem, match="item 1: has neither text nor image") as caught:
        small_preprocessor.serving_inputs(["ok", "  "], [None, b""])
    assert caught.value.reason == "empty"
    with pytest.raises(InvalidItem, match="item 0: image rejected: undecodable"):
        small_preprocessor.serving_inputs(["text"], [b"not an image"])


# Bounded decoding -----------------------------------------------------------------------------------------
def test_decode_returns_rgb():
    image = decode_image(_encode(_noise((20, 10), mode="RGBA")))
    assert image.mode == "RGB" and image.size == (20, 10)


def test_real_decompression_bomb_is_rejected_before_decoding():
    bomb = _encode(Image.new("1", (5001, 5001)))  # 25,010,001 pixels in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError, match="exceeds 25000000 pixels") as caught:
        decode_image(bomb)
    assert caught.value.reason == "too_large"
    assert decode_image(bomb, max_pixels=26_000_000).size == (5001, 5001)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [(6000, 6000, DEFAULT_MAX_PIXELS), (100_000, 100_000, DEFAULT_MAX_PIXELS), (100, 100, 5_000)],
)
def test_oversized_headers_are_too_large(width, height, max_pixels):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(png_header_only(width, height), max_pixels=max_pixels)
    assert caught.value.reason == "too_large"
    assert str(caught.value).startswith("too_large: ")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "undecodable"),
        (_encode(_noise((64, 64), seed=1))[:200], "undecodable"),  # truncated PNG: header ok, data cut
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "undecodable"),
        (b"\xff\xd8\xff\xe0" + b"garbage" * 10, "undecodable"),
    ],
)
def test_corrupt_bytes_raise_with_a_reason(data, reason):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


def test_too_small_images_are_rejected():
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(_encode(_noise((4, 20))), min_side=8)
    assert caught.value.reason == "too_small"
    assert decode_image(_encode(_noise((8, 20))), min_side=8).size == (8, 20)


def test_texts_are_read_up_to_max_text_chars(tiny_text_encoder):
    spec = PreprocessingSpec(max_text_length=8, image_size=16, max_text_chars=50)
    capped = Preprocessor(spec, tiny_text_encoder / "tokenizer.json")
    head = "word " * 10
    assert capped.clean(head + "tail " * 10_000) == capped.clean(head)
    same = capped.encode_texts([head + "zzz" * 30_000, head])
    assert (same[TENSOR_NGRAM_IDS][0] == same[TENSOR_NGRAM_IDS][1]).all()  # nothing past the cap is hashed
    assert (
        PreprocessingSpec.from_dict({"max_text_length": 8}).max_text_chars == 0
    )  # older models: whole texts


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "TGA"])
def test_formats_outside_the_accepted_ones_are_refused(fmt):
    """Finding: Image.open admitted every Pillow format (TIFF, PSD, EPS, ...), each a decoder to attack."""
    with pytest.raises(ImageDecodeError, match="accepted format") as caught:
        decode_image(_encode(_noise((16, 16)), fmt))
    assert caught.value.reason == "undecodable"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_the_accepted_formats_decode(fmt):
    assert decode_image(_encode(_noise((16, 16)), fmt)).size == (16, 16)


def test_the_log_describes_other_formats_as_unreadable():
    from monitoring.schema import IMAGE_FORMAT_UNREADABLE, image_features

    assert image_features(_encode(_noise((16, 16)), "TIFF"))["image_format"] == IMAGE_FORMAT_UNREADABLE
    assert image_features(_encode(_noise((16, 16)), "PNG"))["image_format"] == "PNG"
