"""CLIP's own tokenizer, offline: ``transformers.CLIPTokenizer`` built from the BPE merges that
the PyPI package ``open-clip-torch`` ships (``open_clip/bpe_simple_vocab_16e6.txt.gz``, the file
OpenAI released with CLIP).

The vocabulary is built as CLIP builds it (``open_clip.tokenizer.SimpleTokenizer``): the 256
byte symbols, the same with the end-of-word mark ``</w>``, one token per merge (the first
49,152 - 256 - 2 lines after the header), then ``<|startoftext|>`` (49,406) and
``<|endoftext|>`` (49,407): 49,408 tokens, 77 positions. Padding is ``<|endoftext|>``, as in
the hub's CLIP and Stable Diffusion tokenizers. Nothing of ``open_clip`` is imported (it pulls
in torch and timm); its data file is found through its import spec.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

from gitd.errors import ModelUnavailableError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407
_N_MERGES = 49152 - 256 - 2


def bpe_path() -> Path:
    """The BPE merges file inside the installed ``open_clip`` package (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    raise ModelUnavailableError("CLIP's tokenizer is built from open_clip's BPE vocabulary, "
                                "which is not installed: pip install open-clip-torch")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map of the 256 bytes to printable characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[str, int], tuple[str, ...]]:
    """(token -> id, merges as 'a b' lines), exactly as CLIP builds them."""
    lines = gzip.decompress(bpe_path().read_bytes()).decode("utf-8").split("\n")
    merges = tuple(lines[1:_N_MERGES + 1])
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    if len(tokens) != VOCAB_SIZE:
        raise ModelUnavailableError(f"{bpe_path()}: gives {len(tokens)} tokens, not CLIP's "
                                    f"{VOCAB_SIZE}; reinstall open-clip-torch")
    return {t: i for i, t in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def _folder() -> str:
    """vocab.json + merges.txt (the hub's CLIP layout) in a folder of this process, removed
    when it exits; ``from_pretrained`` on it works with every transformers release."""
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="gitd-clip-tokenizer-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    vocab, merges = vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": MAX_LENGTH, "bos_token": BOS, "eos_token": EOS, "unk_token": EOS,
        "pad_token": EOS, "do_lower_case": True}), encoding="utf-8")
    return str(folder)


@functools.lru_cache(maxsize=None)
def clip_tokenizer(*, max_length: int = MAX_LENGTH):
    """``transformers.CLIPTokenizer`` (49,408 tokens, ``max_length`` positions). Built once per
    process (0.1-0.2 s) and shared by every model that asks: tokenising does not change it, so
    do not change it either (``copy.deepcopy`` it first)."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(_folder(), local_files_only=True)
    tok.model_max_length = max_length
    return tok

