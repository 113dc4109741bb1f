from pathlib import Path

import numpy as np
import pytest
import torch

from gitd.errors import ConfigError, ModelUnavailableError
from gitd.models.encoders import build_image_encoder, build_text_encoder, resolve_device


def test_efficientnet_lite0_real_weights():
    enc = build_image_encoder("efficientnet_lite0", image_size=64)
    assert enc.dim == 1280 and enc.pretrained and enc.mean == (0.5, 0.5, 0.5)
    enc.eval()
    with torch.no_grad():
        out = enc(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1280)
    # Real weights: the stem's first filter is not a fresh random init, and is the same every load.
    again = build_image_encoder("lite0", image_size=64)
    torch.testing.assert_close(enc.backbone._conv_stem.weight, again.backbone._conv_stem.weight)


def test_timm_by_name_without_pretrained_weights():
    enc = build_image_encoder("timm:resnet10t", pretrained=False)
    assert enc.name == "timm:resnet10t" and enc.dim == 512 and not enc.pretrained
    with torch.no_grad():
        assert enc.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 512)


def test_unknown_and_unavailable_image_models(monkeypatch, tmp_path):
    with pytest.raises(ModelUnavailableError, match="not a timm model"):
        build_image_encoder("timm:no_such_net", pretrained=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="not in the local Hugging Face cache") as e:
        build_image_encoder("resnet10t", pretrained=True)
    assert "gitd fetch --model timm=timm/resnet10t" in str(e.value)


def test_auto_falls_back_with_a_warning_and_marks_the_results(monkeypatch, tmp_path, caplog,
                                                             tiny_text):
    """Offline with an empty cache, 'auto' is EfficientNet-Lite0 / MiniLM: a warning says the
    figures are not comparable with the papers', and the encoders' info (what evaluation
    results record under 'encoders') says so too."""
    import gitd.models.encoders as E

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    E._warn_fallback.cache_clear()
    with caplog.at_level("WARNING"):
        image = build_image_encoder("auto", image_size=64)
        text = build_text_encoder("auto")
        assert E.image_model_identity("auto") == image.name == "efficientnet_lite0"
    assert image.info["comparable_with_papers"] is False
    assert image.info["fallback_for"] == "timm:nfnet_l0"
    assert text.name == "minilm" and text.info["fallback_for"] == E.PAPER_TEXT_MODEL
    warnings = [r.getMessage() for r in caplog.records if "NOT comparable" in r.getMessage()]
    assert len(warnings) == 2 and "gitd fetch --evaluate" in warnings[0]
    # Chosen by name, the same encoders are no fallback (and still not the papers').
    named = build_image_encoder("efficientnet_lite0", image_size=64).info
    assert named["fallback_for"] is None and named["comparable_with_papers"] is False
    assert build_text_encoder(tiny_text).info["fallback_for"] is None


def test_timm_and_text_encoders_download_when_online(local_hub, tmp_path, tiny_text,
                                                     monkeypatch):
    """One rule for both kinds: online, a hub model is downloaded (here from the local hub);
    offline, the cached copy is read."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("test_resnet", pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    local_hub.add_commit("timm/test_resnet.r160_in1k", {
        "model.safetensors": (tmp_path / "model.safetensors").read_bytes(),
        "config.json": b"{}", "pytorch_model.bin": b"never fetched"})
    local_hub.add_commit("org/tiny-bert", Path(tiny_text))
    enc = build_image_encoder("timm:test_resnet")
    got = dict(enc.backbone.named_parameters())
    shared = [k for k in got if k in net.state_dict()]
    assert shared and all(torch.equal(got[k], net.state_dict()[k]) for k in shared)
    text = build_text_encoder("org/tiny-bert")
    assert text.dim == 32 and text.info["fallback_for"] is None
    assert all(not p.endswith("pytorch_model.bin") for p in local_hub.downloads())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local_hub.requests.clear()
    assert build_text_encoder("org/tiny-bert").dim == 32
    assert build_image_encoder("timm:test_resnet").dim == enc.dim
    assert local_hub.requests == []


def test_text_encoder_from_folder_pooling(tiny_text):
    cls = build_text_encoder(tiny_text)
    mean = build_text_encoder(tiny_text + "@mean")
    assert cls.pooling == "cls" and mean.pooling == "mean" and cls.dim == 32
    texts = ["a red circle", "a much longer caption about a blue square at the top"]
    a, b = cls.encode(texts), mean.encode(texts)
    assert a.shape == b.shape == (2, 32) and a.dtype == np.float32
    assert not np.allclose(a, b)
    # Batching and length sorting do not change the features.
    np.testing.assert_allclose(cls.encode(texts[::-1], batch_size=1)[::-1], a, atol=1e-5)


def test_text_encoder_errors(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist or is not a folder"):
        build_text_encoder(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="@cls or @mean"):
        build_text_encoder("minilm@max")


def test_minilm_mean_pooled_and_normalised():
    enc = build_text_encoder("minilm")
    assert (enc.dim, enc.pooling, enc.normalize) == (384, "mean", True)
    f = enc.encode(["a red circle on a white background", "a red disc on white",
                    "a stock market report"])
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2  # real weights: paraphrases are close


def test_device():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device"):
        resolve_device("gpu0")
