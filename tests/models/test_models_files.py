"""Which files of a repository the loaders read (gitd.models.files): the one rule behind
`gitd fetch`, online loads and the offline check."""

from __future__ import annotations

from gitd.models.files import TRANSFORMERS, Layout, missing_files, select_files, subfolder

SD15 = {  # the shape of stable-diffusion-v1-5/stable-diffusion-v1-5's listing
    "model_index.json": 1, "README.md": 1, "v1-5-pruned.safetensors": 7_700_000_000,
    "v1-5-pruned-emaonly.ckpt": 4_270_000_000,
    "feature_extractor/preprocessor_config.json": 1,
    "safety_checker/config.json": 1, "safety_checker/model.safetensors": 1_200_000_000,
    "scheduler/scheduler_config.json": 1,
    "text_encoder/config.json": 1, "text_encoder/model.safetensors": 492_000_000,
    "text_encoder/model.fp16.safetensors": 246_000_000, "text_encoder/pytorch_model.bin": 1,
    "tokenizer/merges.txt": 1, "tokenizer/vocab.json": 1, "tokenizer/tokenizer_config.json": 1,
    "tokenizer/special_tokens_map.json": 1,
    "unet/config.json": 1, "unet/diffusion_pytorch_model.safetensors": 3_400_000_000,
    "unet/diffusion_pytorch_model.fp16.safetensors": 1_700_000_000,
    "unet/diffusion_pytorch_model.non_ema.safetensors": 3_400_000_000,
    "unet/diffusion_pytorch_model.bin": 1,
    "vae/config.json": 1, "vae/diffusion_pytorch_model.safetensors": 335_000_000,
    "vae/diffusion_pytorch_model.fp16.safetensors": 167_000_000,
}
PIPE = Layout(files=("model_index.json",), folders=(
    "feature_extractor", "scheduler", "text_encoder", "tokenizer", "unet", "vae"),
    diffusers=True)


def test_a_pipeline_fp16_and_full_precision():
    half, notes = select_files(SD15, PIPE, fp16=True)
    assert notes == []
    assert set(half) == {
        "model_index.json", "feature_extractor/preprocessor_config.json",
        "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json",
        "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"}
    full, _ = select_files(SD15, PIPE, fp16=False)
    assert "unet/diffusion_pytorch_model.safetensors" in full
    assert not any(".fp16." in f or "non_ema" in f or f.endswith((".bin", ".ckpt"))
                   or f.startswith(("safety_checker", "v1-5")) for f in full)
    # A component the repository's model_index does not list is not fetched.
    only, _ = select_files(SD15, PIPE, fp16=True, pipeline_components=["unet", "vae"])
    assert {f.split("/")[0] for f in only} == {"model_index.json", "unet", "vae"}


def test_transformers_root_shards_and_bin_fallback():
    blip2 = {"config.json": 1, "preprocessor_config.json": 1, "tokenizer.json": 1,
             "model-00001-of-00002.safetensors": 1, "model-00002-of-00002.safetensors": 1,
             "model.safetensors.index.json": 1, "pytorch_model-00001-of-00002.bin": 1,
             "pytorch_model-00002-of-00002.bin": 1, "pytorch_model.bin.index.json": 1,
             "README.md": 1, "onnx/model.onnx": 1, "onnx/config.json": 1}
    files, notes = select_files(blip2, TRANSFORMERS, fp16=True)
    assert set(files) == {"config.json", "preprocessor_config.json", "tokenizer.json",
                          "model-00001-of-00002.safetensors",
                          "model-00002-of-00002.safetensors", "model.safetensors.index.json"}
    old = {"config.json": 1, "pytorch_model.bin": 1, "tf_model.h5": 1, "vocab.txt": 1}
    files, notes = select_files(old, TRANSFORMERS, fp16=False)
    assert set(files) == {"config.json", "pytorch_model.bin", "vocab.txt"}
    assert "no safetensors" in notes[0]
    # Only fp16 weights in a diffusers folder: loaded (and cast) when float32 is asked for.
    files, notes = select_files({"vae/config.json": 1,
                                 "vae/diffusion_pytorch_model.fp16.safetensors": 1},
                                subfolder("vae"), fp16=False)
    assert "vae/diffusion_pytorch_model.fp16.safetensors" in files and "only fp16" in notes[0]


def test_missing_files_of_a_snapshot(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    assert missing_files(tmp_path, subfolder("vae")) == ["vae/weights"]
    (tmp_path / "vae" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert missing_files(tmp_path, subfolder("vae")) == []
    assert missing_files(tmp_path, PIPE)[0] == "model_index.json"
