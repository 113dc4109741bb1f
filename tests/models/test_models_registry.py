"""Registry: tiny models build offline and deterministically; real loaders read local folders;
unknown models fail with one line."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gitd.errors import ConfigError, ModelUnavailableError
from gitd.models import (build, build_captioner, build_img2img, build_score_model, build_vae,
                         describe_model, is_untrained, list_models, register, resolve_device,
                         resolve_dtype)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models are dominated by thread start-up; one thread is faster and steadier on a
    # loaded 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def red(size=64):
    return Image.new("RGB", (size, size), (200, 30, 30))


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))


def test_tiny_models_have_real_classes_and_sd_shapes():
    from diffusers import AutoencoderKL, StableDiffusionImg2ImgPipeline
    from transformers import BlipForConditionalGeneration, CLIPModel

    vae = build_vae("tiny", seed=0)
    assert isinstance(vae, AutoencoderKL)
    with torch.no_grad():
        lat = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert lat.shape == (1, 4, 8, 8)
    pipe = build_img2img("tiny-sd", vae=vae)
    assert isinstance(pipe, StableDiffusionImg2ImgPipeline) and pipe.vae is vae
    assert pipe.safety_checker is None
    assert isinstance(build_score_model("tiny").model, CLIPModel)
    assert isinstance(build_captioner("tiny").model, BlipForConditionalGeneration)


def test_tiny_weights_depend_only_on_seed():
    a, b, c = (build_vae("tiny", seed=s) for s in (3, 3, 4))
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    state = torch.random.get_rng_state()
    build_score_model("tiny", seed=1)
    assert torch.equal(state, torch.random.get_rng_state()), "building must not move the RNG"


def test_score_model_embeddings_and_scores():
    sm = build_score_model("tiny")
    imgs = [red(), Image.new("RGB", (40, 90), "blue")]
    e = sm.encode_images(imgs)
    t = sm.encode_texts(["a red square", "a blue bar " * 200])  # the long one is truncated
    assert e.shape[0] == 2 and t.shape[0] == 2 and e.shape[1] == t.shape[1]
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    sim = sm.similarity(imgs, ["a red square", "a blue bar " * 200])
    assert torch.allclose(sim, e @ t.T, atol=1e-5)
    assert torch.allclose(sm.score(imgs, ["x", "y"]), torch.diagonal(sm.similarity(imgs, ["x", "y"])),
                          atol=1e-5)


def test_captioner_per_image_seeding_is_batch_independent():
    cap = build_captioner("tiny")
    kw = dict(num_captions=3, temperature=0.7, top_p=0.9, max_new_tokens=6)
    img2 = Image.new("RGB", (64, 64), "green")
    batch = cap.generate([red(), img2], seeds=[11, 12], **kw)
    alone = cap.generate([img2], seeds=[12], **kw)
    assert batch[1] == alone[0]
    assert all(len(caps) == 3 and all(c.strip() for c in caps) for caps in batch)
    assert cap.generate([img2], seeds=[13], **kw)[0] != alone[0]


def test_captioner_never_returns_empty(monkeypatch):
    cap = build_captioner("tiny")
    monkeypatch.setattr(cap, "_sample", lambda image, **kw: ["", "a dog", ""])
    assert cap.generate([red()], num_captions=3, temperature=1, top_p=1, max_new_tokens=4,
                        seeds=[0]) == [["a dog"] * 3]
    monkeypatch.setattr(cap, "_sample", lambda image, **kw: ["", ""])
    out = cap.generate([red()], num_captions=2, temperature=1, top_p=1, max_new_tokens=4,
                       seeds=[0])
    assert all(c.strip() for c in out[0]) and cap.fallbacks == 4


def test_real_loaders_read_saved_local_folders(tmp_path):
    """The from_pretrained paths used for hub ids, exercised on tiny models saved to disk."""
    from transformers import CLIPProcessor

    pipe = build_img2img("tiny")
    pipe.save_pretrained(tmp_path / "sd")
    vae = build_vae(str(tmp_path / "sd"))
    pipe2 = build_img2img(str(tmp_path / "sd"), vae=vae)
    assert pipe2.vae is vae and pipe2.safety_checker is None
    assert torch.equal(next(vae.parameters()), next(pipe.vae.parameters()))

    sm = build_score_model("tiny")
    sm.model.save_pretrained(tmp_path / "clip")
    CLIPProcessor(image_processor=sm.image_processor, tokenizer=sm.tokenizer).save_pretrained(
        tmp_path / "clip")
    sm2 = build_score_model(str(tmp_path / "clip"))
    assert torch.allclose(sm.score([red()], ["a red square"]),
                          sm2.score([red()], ["a red square"]), atol=1e-5)

    cap = build_captioner("tiny")
    cap.model.save_pretrained(tmp_path / "blip")
    cap.processor.save_pretrained(tmp_path / "blip")
    cap2 = build_captioner(str(tmp_path / "blip"))
    kw = dict(num_captions=2, temperature=0.7, top_p=0.9, max_new_tokens=5, seeds=[4])
    assert cap.generate([red()], **kw) == cap2.generate([red()], **kw)


@pytest.mark.parametrize("builder", [build_vae, build_img2img, build_score_model, build_captioner])
def test_unknown_model_offline_is_one_line(builder):
    with pytest.raises(ModelUnavailableError) as err:
        builder("gitd-test-nobody/no-such-model")
    msg = str(err.value)
    assert "\n" not in msg
    assert "gitd-test-nobody/no-such-model" in msg
    assert "hf download gitd-test-nobody/no-such-model" in msg and "--preset tiny" in msg


def test_missing_local_folder_is_one_line(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist") as err:
        build_vae(str(tmp_path / "nope"))
    assert "\n" not in str(err.value)


def test_register_a_new_kind_and_name():
    @register("unclip-test", "tiny-unclip-test", untrained=True)
    def _b(name, *, device, dtype, seed=0, revision=None, **extra):
        return ("built", name, device.type, dtype, seed, extra)

    assert "tiny-unclip-test" in list_models("unclip-test")
    assert build("unclip-test", "tiny-unclip-test", device="cpu", seed=5, foo=1) == (
        "built", "tiny-unclip-test", "cpu", torch.float32, 5, {"foo": 1})
    with pytest.raises(ConfigError, match="unknown unclip-test model"):
        build("unclip-test", "other", device="cpu")
    with pytest.raises(ConfigError, match="unknown model kind"):
        build("no-such-kind", "x")


def test_text2img_is_derived_from_every_img2img_name():
    # EDGE samples text-to-image from its diffusion model: every img2img name builds one, from
    # the same weights, untrained where that one is; no name can be registered for it alone.
    assert list_models("text2img") == list_models("img2img")
    assert "text2img" in list_models()
    assert is_untrained("text2img", "tiny-sd") and not is_untrained("text2img", "some/sd-id")
    info = describe_model("text2img", "tiny-sd")
    assert info["kind"] == "text2img" and info["source"] == "registry" and info["untrained"]
    assert describe_model("text2img", "some/sd-id")["source"] == "huggingface"
    with pytest.raises(ValueError, match="register the name there"):
        register("text2img", "mine")


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_load_pretrained_holds_library_noise_and_asks_the_hub_last(monkeypatch, capsys,
                                                                   caplog):
    """A failing load is one error without the libraries' log lines or warnings; a working
    one lets them through. The local cache is tried first; the hub only once it answers."""
    import logging
    import warnings

    from gitd.models import load_pretrained

    calls = []

    def noisy(source, **kw):
        calls.append(kw.get("local_files_only", False))
        logging.getLogger("huggingface_hub").warning("Retrying in 1s [Retry 1/5].")
        warnings.warn("deprecated thing", FutureWarning)
        raise OSError(f"{source} does not appear to have a file named config.json")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE is set") as e:
        load_pretrained(noisy, "org/model", what="VAE")
    assert e.value.exit_code == 3 and calls == [True]
    captured = capsys.readouterr()
    assert captured.err == "" and "Retrying" not in caplog.text

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    calls.clear()
    with pytest.raises(ModelUnavailableError, match="is not reachable"):
        load_pretrained(noisy, "org/model", what="VAE")
    assert calls == [True]  # the cache only: the dead hub is never handed to the library
    assert "Retrying" not in caplog.text and capsys.readouterr().err == ""

    def fine(source, **kw):
        logging.getLogger("huggingface_hub").warning("a useful note")
        return "model"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_pretrained(fine, "org/model", what="VAE") == "model"
    assert "a useful note" in caplog.text + capsys.readouterr().err


def test_stage_folders_wait_for_their_models(tmp_path):
    from gitd.store import Stage

    def no_model():
        raise ModelUnavailableError("VAE model 'x' is not on disk", exit_code=3)

    with pytest.raises(ModelUnavailableError):
        Stage.open(tmp_path / "work", "encode", {"a": 1}, prepare=no_model)
    assert not (tmp_path / "work").exists()
    stage = Stage.open(tmp_path / "work", "encode", {"a": 1}, prepare=lambda: None)
    stage.mark_done()
    # a finished stage needs no model
    assert Stage.open(tmp_path / "work", "encode", {"a": 1}, prepare=no_model).done
