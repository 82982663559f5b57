"""Fixtures: tiny random BERT / MPNet checkpoints with a WordPiece tokenizer, a synthetic labelled
CSV, a recipe pointing at them, and artifacts exported once per session (seconds, not minutes)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = {"pos": ["good", "great", "love", "happy", "nice"], "neg": ["bad", "awful", "hate", "sad", "poor"],
         "neu": ["table", "blue", "monday", "paper", "train"]}
FILLER = ["the", "a", "is", "was", "my", "this", "day", "flight", "phone", "and", "it", "so"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tokenizer(path: Path, pad_first: bool) -> dict[str, int]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    special = SPECIAL if pad_first else ["[UNK]", "[PAD]", *SPECIAL[2:]]  # MPNet pads with id 1
    vocab = {t: i for i, t in enumerate(special + sorted({w for ws in WORDS.values() for w in ws} | set(FILLER)))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.save(str(path / "tokenizer.json"))
    return vocab


def make_tiny_model(path: Path, family: str, layers: int = 4, seqcls: bool = False) -> Path:
    """A random BERT / MPNet encoder (or *ForSequenceClassification with 3 labels) + tokenizer.json."""
    import torch
    from transformers import (BertConfig, BertForSequenceClassification, BertModel, MPNetConfig,
                              MPNetForSequenceClassification, MPNetModel)
    path.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(path, pad_first=family == "bert")
    common = dict(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                  intermediate_size=128, max_position_embeddings=80, pad_token_id=vocab["[PAD]"])
    if seqcls:
        common.update(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    torch.manual_seed(0)
    config = BertConfig(**common) if family == "bert" else MPNetConfig(**common)
    cls = {("bert", False): BertModel, ("bert", True): BertForSequenceClassification,
           ("mpnet", False): MPNetModel, ("mpnet", True): MPNetForSequenceClassification}[family, seqcls]
    model = cls(config)
    model.save_pretrained(path)
    return path


def make_dataset(path: Path, n: int = 600, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(n):
        label = rng.choice(list(WORDS))
        words = [rng.choice(WORDS[label]) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(2, 12))] + [f"{i}"]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_recipe(path: Path, model: Path, dataset: Path, ckpt: Path, exits=(1, 2), extra: str = "") -> Path:
    path.write_text(f"""
[model]
id = "{model}"
max_length = 24
[dataset]
id = "{dataset}"
text_column = "text"
label_column = "label"
labels = ["neg", "neu", "pos"]
val_size = 80
test_size = 80
[exits]
layers = {list(exits)}
[training]
batch_size = 16
head_width = 16
lr_lora = 3e-3
lr_heads = 3e-3
checkpoint_dir = "{ckpt}"
[calibration]
timing_samples = 10
batch_size = 16
[quantization]
calibration_samples = 8
{extra}
""")
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Dict of paths: bert / mpnet model dirs, dataset CSV, checkpoint dir, work dir."""
    root = tmp_path_factory.mktemp("tiny")
    return {"bert": make_tiny_model(root / "bert", "bert"), "mpnet": make_tiny_model(root / "mpnet", "mpnet"),
            "data": make_dataset(root / "data.csv"), "ckpt": root / "ckpt", "root": root}


def export_tiny(tiny, family: str, name: str, exits=(1, 2), extra: str = "", overrides: dict | None = None):
    from dynexport.export.bert_exits import export
    from dynexport.recipe import load_recipe
    recipe = load_recipe(write_recipe(tiny["root"] / f"{name}.toml", tiny[family], tiny["data"], tiny["ckpt"],
                                      exits, extra), overrides)
    out = tiny["root"] / "artifacts" / name
    export(recipe, out)
    return out, recipe


@pytest.fixture(scope="session")
def bert_artifact(tiny):
    return export_tiny(tiny, "bert", "bert-fp32")


@pytest.fixture(scope="session")
def mpnet_artifact(tiny):
    return export_tiny(tiny, "mpnet", "mpnet-fp32")
