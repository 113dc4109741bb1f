import pytest
import torch
from torch import nn

from gitd.errors import ConfigError
from gitd.retrieval.losses import in_batch_correct, info_nce
from gitd.retrieval.model import ProjectionHead, RetrievalModel
from gitd.retrieval.protocols import DEFAULT_PROTOCOL, PROTOCOLS, get_protocol


def test_named_protocols_follow_the_papers():
    lors, gitd = PROTOCOLS["lors"], PROTOCOLS["gitd"]
    assert (lors.optimizer, lors.lr, lors.weight_decay, lors.momentum, lors.epochs,
            lors.batch_size, lors.image_size, lors.interpolation, lors.normalize) == (
        "sgd", 0.1, 5e-4, 0.9, 100, 128, 224, "bicubic", "clip")
    assert (gitd.optimizer, gitd.lr, gitd.weight_decay, gitd.epochs, gitd.batch_size) == (
        "adamw", 5e-4, 5e-4, 400, 32)
    assert lors.lr_at(0) == 0.1 and lors.lr_at(49) == 0.1 and lors.lr_at(50) == pytest.approx(0.01)
    assert gitd.lr_at(399) == 5e-4
    assert DEFAULT_PROTOCOL in PROTOCOLS


def test_overrides_and_none_is_ignored():
    p = get_protocol("lors", epochs=0, image_size=128, lr=None, batch_size=8)
    assert (p.epochs, p.image_size, p.lr, p.batch_size) == (0, 128, 0.1, 8)


@pytest.mark.parametrize("kw,match", [
    ({"epochs": -1}, "epochs must be >= 0, got -1"), ({"lr": 0}, "lr must be > 0, got 0"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"image_size": 16}, "image_size must be >= 32, got 16"),
    ({"optimizer": "adam"}, "optimizer must be one of sgd, adamw"),
    ({"loss": "mse"}, "loss must be one of infonce, wbce"),
    ({"warmup": 3}, "unknown protocol setting"),
])
def test_bad_settings_name_the_value(kw, match):
    with pytest.raises(ConfigError, match=match):
        get_protocol("gitd", **kw)


def test_unknown_protocol():
    with pytest.raises(ConfigError, match="unknown protocol 'mtt'"):
        get_protocol("mtt")


def test_info_nce_is_symmetric_and_rewards_alignment():
    torch.manual_seed(0)
    x = nn.functional.normalize(torch.randn(8, 16), dim=-1)
    y = nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert info_nce(x, x) < 0.01 < info_nce(x, y)
    assert info_nce(x, y) == pytest.approx(info_nce(y, x).item(), rel=1e-6)
    # With temperature 0.07, logits are cos / 0.07.
    manual = nn.functional.cross_entropy(x @ y.T / 0.07, torch.arange(8))
    manual2 = nn.functional.cross_entropy(y @ x.T / 0.07, torch.arange(8))
    assert info_nce(x, y) == pytest.approx(((manual + manual2) / 2).item(), rel=1e-5)


def test_in_batch_correct_needs_both_directions():
    img = torch.eye(3)
    # text 0 matches image 0 best both ways; text 1 is image 1's best match but image 2 matches
    # text 1 better still (so IR fails for pair 1 and TR fails for pair 2); text 2 is
    # closer to image 1 than to image 2.
    txt = torch.tensor([[1.0, 0.0, 0.0],
                        [0.0, 0.6, 0.8],
                        [0.0, 0.5, 0.4]])
    assert in_batch_correct(img, txt).tolist() == [True, False, False]
    assert in_batch_correct(img, img).tolist() == [True, True, True]


def test_projection_head_structure():
    torch.manual_seed(0)
    head = ProjectionHead(12, 20, dropout=0.1).eval()
    x = torch.randn(5, 12)
    h = head.fc1(x)
    expected = head.norm(head.fc2(head.act(h)) + h)
    torch.testing.assert_close(head(x), expected)
    assert head(x).shape == (5, 20)


def test_frozen_batchnorm_stays_in_eval_mode_while_training():
    enc = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    enc.dim = 4
    model = RetrievalModel(6, 4, enc, freeze_bn=True).train()
    assert not enc[1].training and model.head.training
    before = enc[1].running_mean.clone()
    model.encode_images(torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8))
    torch.testing.assert_close(enc[1].running_mean, before)
    assert RetrievalModel(6, 4, enc, freeze_bn=False).train().image_encoder[1].training
