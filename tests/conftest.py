"""Suite-wide settings and the small image-caption sets several test folders share.

One intra-op thread: the tests' models are tiny, so a second thread buys nothing, and when the
machine is busy OpenMP's spin-waiting threads make small ops up to 50x slower (measured: a tiny
BLIP caption call took 18 s with 2 threads under load, 0.3 s with 1). Subprocesses inherit the
environment variables. The hub is never contacted from tests.
"""

import json
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30), "black": (10, 10, 10), "white": (245, 245, 245),
           "purple": (140, 30, 160), "orange": (240, 140, 20)}


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    from gitd.evaluation.tiny import write_tiny_text_model
    return str(write_tiny_text_model(tmp_path_factory.mktemp("tiny-text")))


def write_set(folder, names, *, captions_per_image=1, size=40, file="set.json", prefix=""):
    """A BLIP JSON set of flat-colour images with one caption list per image."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    rows = []
    rng = np.random.default_rng(len(names))
    for i, name in enumerate(names):
        arr = np.zeros((size, size, 3), np.uint8) + np.array(COLOURS[name], np.uint8)
        arr[: size // 2, : size // 2] = rng.integers(0, 255, 3)  # some texture
        path = f"images/{prefix}{i:03d}-{name}.png"
        Image.fromarray(arr).save(folder / path)
        caps = [f"a {name} picture number {j}" for j in range(captions_per_image)]
        rows.append({"image": path, "caption": caps})
    (folder / file).write_text(json.dumps(rows))
    return folder / file


@pytest.fixture
def set_writer():
    """``write_set`` for tests that build their own sets (a fixture, because ``import conftest``
    is ambiguous when several test folders have one)."""
    return write_set


@pytest.fixture
def tiny_sets(tmp_path):
    names = list(COLOURS)
    train = write_set(tmp_path / "data", names, file="train.json", prefix="tr")
    test = write_set(tmp_path / "data", names[:6], captions_per_image=2, file="test.json",
                     prefix="te")
    return train, test


class FieldLoaders:
    """The access pattern of the training dataset classes of BLIP, LoRS, MTT-VL and EDGE
    (``flickr30k_train`` / ``coco_train``), re-implemented here, not copied: they read
    ``ann_root/<file>`` with ``json.load``, number the distinct ``ann['image_id']`` values in
    first-appearance order, and per row open ``os.path.join(image_root, ann['image'])`` with PIL
    and lower-case / strip / truncate ``ann['caption']`` as a string."""

    # (ann_root, image_root) relative to an export folder, and the file each loader opens.
    LAYOUTS = {
        "blip": ("flickr30k_train.json", "coco_karpathy_train.json"),
        "lors": ("flickr30k_train.json", "coco_karpathy_train.json"),
        "mtt-vl": ("flickr30k_train.json", "coco_karpathy_train.json"),
        "edge": ("flickr30k_train.json", "coco_train.json"),
    }

    @staticmethod
    def pre_caption(caption, max_words=30):
        # the strictest variant in use: ALBEF-style code raises on text left empty
        import re
        caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
        caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
        caption = " ".join(caption.split(" ")[:max_words])
        if not caption:
            raise ValueError("pre_caption yields invalid text")
        return caption

    def train_items(self, ann_file, image_root):
        """[(image path, caption, image index)] exactly as the loaders' __getitem__ yields them
        (the image decoded to RGB)."""
        import json as _json
        import os as _os

        from PIL import Image as _Image

        with open(ann_file) as f:
            annotation = _json.load(f)
        img_ids = {}
        for ann in annotation:
            if ann["image_id"] not in img_ids:
                img_ids[ann["image_id"]] = len(img_ids)
        items = []
        for ann in annotation:
            path = _os.path.join(image_root, ann["image"])
            _Image.open(path).convert("RGB")
            items.append((path, self.pre_caption(ann["caption"]), img_ids[ann["image_id"]]))
        return items

    def check_output(self, out):
        """An OUT folder read as a training set (ann file OUT/annotations.json, image root OUT):
        one item per caption, one image index per image, paths inside OUT."""
        import json as _json
        out = Path(out)
        items = self.train_items(out / "annotations.json", str(out))
        rows = _json.loads((out / "annotations.json").read_text())
        assert all(isinstance(r["caption"], str) and type(r["image_id"]) is int for r in rows)
        manifest = _json.loads((out / "manifest.json").read_text())
        assert {p for p, _, _ in items} == {str(out / i["image"]) for i in manifest["items"]}
        assert len({i for _, _, i in items}) == len(manifest["items"])
        return items


@pytest.fixture(scope="session")
def field_loaders() -> FieldLoaders:
    return FieldLoaders()


@pytest.fixture(scope="session")
def shard_set(tmp_path_factory):
    """The stand-in dataset twice: a BLIP annotation file and the same samples written as
    WebDataset shards by ``webdataset``'s own ShardWriter (5 samples a shard, PNG + TXT + JSON).
    Returns (annotation file, shards folder, brace pattern); read only."""
    import json

    import webdataset as wds

    from gitd.data import load_dataset
    from gitd.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("shard-set")
    make_shapes(root / "data", train=24, test=6, size=64, seed=5, workers=1)
    ann = root / "data" / "train.json"
    shards = root / "shards"
    shards.mkdir()
    with wds.ShardWriter(str(shards / "%05d.tar"), maxcount=5, verbose=0) as sink:
        for i, rec in enumerate(load_dataset(ann)):
            sink.write({"__key__": f"{i:06d}", "png": rec.image.read_bytes(),
                        "txt": "\n".join(rec.captions), "json": json.dumps({"source": rec.id})})
    return ann, shards, str(shards / "{00000..00004}.tar")


TAESD_ENV = "GITD_TAESD"


@pytest.fixture(scope="session")
def taesd_dir():
    """The real TAESD (SD 1.x) weights folder, named only by $GITD_TAESD (CI points it at
    ../shared/weights/taesd-sd1 when that exists); tests that need real weights skip without."""
    from pathlib import Path

    value = os.environ.get(TAESD_ENV, "").strip()
    if not value:
        pytest.skip(f"real TAESD weights not given: set {TAESD_ENV} to the TAESD for SD 1.x "
                    "folder (diffusers layout of madebyollin/taesd, e.g. "
                    "../shared/weights/taesd-sd1)")
    folder = Path(value).expanduser()
    if not (folder / "config.json").is_file():
        pytest.skip(f"{TAESD_ENV}={value}: no such TAESD folder (config.json missing)")
    return folder


@pytest.fixture(scope="session")
def small_tiny_vae():
    """Factory of small random-weight ``AutoencoderTiny`` (TAESD's class, 8x downsampling, 4
    latent channels unless overridden); keyword arguments override its config."""
    def make(**config):
        import diffusers

        torch.manual_seed(0)
        return diffusers.AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), **config).eval()

    return make


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
    """A local server answering the hub's API (``tests/hubserver.py``), with this process
    online and pointed at it, and an empty Hugging Face cache in ``tmp_path/hf/hub``.
    ``local_hub.env``: the same for a subprocess."""
    from hubserver import LocalHub

    hub = LocalHub()
    cache = tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    hub.cache = cache
    hub.env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"},
               "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
    yield hub
    hub.close()


@pytest.fixture(scope="session")
def tiny_blip2():
    """Factory: ``tiny_blip2(folder, updated=...)`` saves a tiny BLIP-2 as a model folder."""
    def save(folder, *, updated: bool):
        """A tiny BLIP-2 (OPT decoder) as the hub has it: ``updated`` as after the 2024
        processor update (``num_query_tokens`` on the processor, ``image_token_index`` in the
        config), else as snapshots cached before it."""
        from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                                  Blip2QFormerConfig, Blip2VisionConfig, BlipImageProcessor,
                                  OPTConfig)

        from gitd.models import tiny

        tok = tiny.bert_tokenizer(max_length=64)
        tok.model_input_names = ["input_ids", "attention_mask"]
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
        image_id = tok.convert_tokens_to_ids("<image>")
        small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 4}
        cfg = Blip2Config(
            vision_config=Blip2VisionConfig(**small, image_size=32, patch_size=8).to_dict(),
            qformer_config=Blip2QFormerConfig(**small, encoder_hidden_size=32,
                                              vocab_size=len(tok)).to_dict(),
            text_config=OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64,
                                  num_hidden_layers=1, num_attention_heads=4,
                                  word_embed_proj_dim=32, max_position_embeddings=128,
                                  bos_token_id=101, eos_token_id=102, pad_token_id=0).to_dict(),
            num_query_tokens=4, image_token_index=image_id if updated else None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Blip2ForConditionalGeneration(cfg).eval()
        processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32,
                                                                            "width": 32}),
                                   tokenizer=tok, num_query_tokens=4 if updated else None)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        return folder

    return save
