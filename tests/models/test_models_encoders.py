import os

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


def test_unknown_and_unavailable_image_models():
    with pytest.raises(ModelUnavailableError, match="not a timm model"):
        build_image_encoder("timm:no_such_net", pretrained=False)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        with pytest.raises(ModelUnavailableError, match="not on disk"):
            build_image_encoder("resnet10t", pretrained=True)


def test_auto_falls_back_to_offline_encoders(monkeypatch):
    import gitd.models.encoders as E
    monkeypatch.setattr(E, "_timm_weights_cached", lambda name: False)
    assert build_image_encoder("auto", image_size=64).name == "efficientnet_lite0"


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
    with pytest.raises(ModelUnavailableError, match="cannot be loaded from disk"):
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
