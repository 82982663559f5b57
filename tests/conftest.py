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


# ---- tiny causal LMs for speculative decoding ----

LM_TEXT = ("the cat sat on the mat . the dog ran to the park . a bird sang in the tree . "
           "we read the book and the cat slept . 1 2 3 4 5 6 7 8 9 10 . def f ( x ) : return x + 1 \n")


def make_tiny_llama(path: Path, layers: int = 3, seed: int = 0, vocab_size: int = 300,
                    tokenizer_text: str = LM_TEXT, train_steps: int = 60) -> Path:
    """A tiny LlamaForCausalLM (hidden 64, GQA 4/2 heads, tied head) briefly trained on `tokenizer_text`,
    with a byte-level BPE tokenizer trained on the same text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([tokenizer_text] * 4, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                     unk_token="<|endoftext|>", pad_token="<|im_end|>")
    hf_tok.save_pretrained(path)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         rope_theta=10000.0)
    model = LlamaForCausalLM(config)
    if train_steps:  # a little language modelling: diverse, confident next-token distributions
        ids = torch.tensor(hf_tok(tokenizer_text * 8)["input_ids"])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for step in range(train_steps):
            starts = torch.randint(0, len(ids) - 33, (16,))
            batch = torch.stack([ids[s:s + 33] for s in starts])
            loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
            opt.zero_grad(), loss.backward(), opt.step()
    model.save_pretrained(path)
    return path


def make_draft_delta(path: Path, target: Path, layers=(0,), vocab: int | None = 200, lora_rank: int = 4) -> Path:
    """A draft delta (draft.json + draft.safetensors) over `target`: kept layers, truncated vocab, LoRA."""
    import json

    import torch
    from safetensors.torch import save_file

    from dynexport.manifest import sha256_file
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    tensors = {}
    if vocab:
        tensors["vocab_ids"] = torch.arange(vocab, dtype=torch.int64)
    for j in range(len(layers)):
        tensors[f"layers.{j}.wq.lora_A"] = torch.randn(lora_rank, 64) * 0.1
        tensors[f"layers.{j}.wq.lora_B"] = torch.randn(64, lora_rank) * 0.1
    save_file(tensors, str(path / "draft.safetensors"))
    (path / "draft.json").write_text(json.dumps({
        "format": "dynexport-draft", "version": 1, "target_sha256": sha256_file(target / "model.safetensors"),
        "layers": list(layers), "lora_scale": 1.0}))
    return path


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """Paths: target (3-layer random Llama), draft (delta: its layer 0, 200-token vocab), artifact."""
    from dynexport.export.speculative import export
    root = tmp_path_factory.mktemp("tiny_lm")
    target = make_tiny_llama(root / "target")
    draft = make_draft_delta(root / "draft", target)
    art = root / "artifacts" / "spec"
    export(target, draft, art, weight_format="fp32")
    return {"target": target, "draft": draft, "artifact": art, "root": root}


def make_tiny_eagle_head(path: Path, target: Path, vocab: int | None = 200, seed: int = 2, train_steps: int = 0) -> Path:
    """An EAGLE head dir over `target` (truncated vocab), its layer from the target's last; with
    train_steps, briefly trained (training-time test, depth 3) on the target's features of LM_TEXT,
    so that drafts are often accepted; else a randomly perturbed fc."""
    import torch
    from transformers import AutoTokenizer

    from dynexport.export.eagle_head import init_head, save_head
    from dynexport.export.llama import KVLlama
    from dynexport.export.lm_sources import read_checkpoint
    from dynexport.train.eagle import EagleCfg, target_features, train_head
    cfg, sd, sha, n = read_checkpoint(target)
    vocab_ids = torch.arange(vocab if vocab else sd["model.embed_tokens.weight"].shape[0])
    head = init_head(cfg, sd, vocab_ids, n)
    torch.manual_seed(seed)
    with torch.no_grad():
        head.fc.weight.add_(torch.randn_like(head.fc.weight) * 0.05)
    if train_steps:
        ids = torch.tensor(AutoTokenizer.from_pretrained(target)(LM_TEXT * 8)["input_ids"])
        chunks = torch.stack([ids[s:s + 32] for s in range(0, len(ids) - 32, 5)])  # [N, 32]
        feats, _ = target_features(KVLlama(cfg, sd, list(range(n)), features=True).eval(), chunks)
        train_head(head, (chunks, feats), EagleCfg(steps=train_steps, batch=8, lr=3e-3), path.parent / "eagle_ckpt.pt",
                   log=lambda m: None)
    save_head(head.eval(), vocab_ids, sha, {"note": "tiny test head", "train_steps": train_steps}, path)
    return path


@pytest.fixture(scope="session")
def tiny_eagle(tiny_lm):
    """The tiny target of tiny_lm + a random EAGLE head, exported (fp32)."""
    from dynexport.export.eagle import export
    root = tiny_lm["root"]
    head = make_tiny_eagle_head(root / "eagle_head", tiny_lm["target"], train_steps=120)
    art = root / "artifacts" / "eagle"
    export(tiny_lm["target"], head, art, weight_format="fp32")
    return {"target": tiny_lm["target"], "head": head, "artifact": art, "root": root}
