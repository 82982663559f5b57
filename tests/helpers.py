"""Shared test helpers (no test module imports another): tiny random models and data, their exports
through the method registry, the CLI through a subprocess, a torch blocker, graph op counts."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from dynexport.bench.stats import pvalue
from dynexport.models.tiny import LM_TEXT, make_tiny_llama  # noqa: F401

WORDS = {"pos": ["good", "great", "love", "happy", "nice"], "neg": ["bad", "awful", "hate", "sad", "poor"],
         "neu": ["table", "blue", "monday", "paper", "train"]}
FILLER = ["the", "a", "is", "was", "my", "this", "day", "flight", "phone", "and", "it", "so"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# a chat template for tiny LMs (the served chat model): <role>content lines, then <assistant>
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


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
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        MPNetConfig,
        MPNetForSequenceClassification,
        MPNetModel,
    )
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


def export_tiny(tiny, family: str, name: str, exits=(1, 2), extra: str = "", overrides: dict | None = None,
                formats=("openvino", "onnxruntime")):
    """A tiny encoder exported for early exit (trains its checkpoint the first time)."""
    from dynexport import methods
    recipe = methods.get("early-exit").load_recipe(
        write_recipe(tiny["root"] / f"{name}.toml", tiny[family], tiny["data"], tiny["ckpt"], exits, extra), overrides)
    out = tiny["root"] / "artifacts" / name
    methods.export("early-exit", recipe, out, formats=formats)
    return out, recipe


# ---- tiny causal LMs for speculative decoding and EAGLE ----

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


def export_lm(method: str, out: Path, target: Path, addon: Path, weight_format: str = "fp32",
              formats=("openvino", "onnxruntime"), **fields):
    """A speculative (addon = draft) or EAGLE (addon = head) artifact of a tiny target; fields: other
    recipe fields (generation={...})."""
    from dynexport import methods
    from dynexport.recipe import EagleRecipe, SpeculativeRecipe
    cls, key = (SpeculativeRecipe, "draft") if method == "speculative" else (EagleRecipe, "head")
    recipe = cls(target=str(target), **{key: str(addon)}, quantization={"weight_format": weight_format}, **fields)
    return methods.export(method, recipe, out, formats=formats)


def make_tiny_eagle_head(path: Path, target: Path, vocab: int | None = 200, seed: int = 2, train_steps: int = 0) -> Path:
    """An EAGLE head dir over `target` (truncated vocab), its layer from the target's last; with
    train_steps, briefly trained (training-time test, depth 3) on the target's features of LM_TEXT,
    so that drafts are often accepted; else a randomly perturbed fc."""
    import torch
    from transformers import AutoTokenizer

    from dynexport.models.eagle_head import init_head, save_head
    from dynexport.models.llama import KVLlama
    from dynexport.models.lm_sources import read_checkpoint
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


# ---- a tiny random UNet + step predictor for StepSaver ----

COUNTS = [2, 4, 8]  # the tiny step predictor's classes


def make_tiny_diffusion(root: Path) -> dict:
    """A random 16 px UNet conditioned on a tiny BERT, and a random step predictor over COUNTS."""
    import torch

    from dynexport.manifest import StepPredictorInfo
    from dynexport.models.step_predictor import PredictorCfg, StepPredictor, save_predictor
    from dynexport.models.unet import UNetCfg, build_unet, save_unet
    text = make_tiny_model(root / "bert", "bert")
    ucfg = UNetCfg(size=16, channels=(8, 16), attention_head_dim=4, norm_num_groups=4, text_encoder=str(text),
                   context_dim=64)
    torch.manual_seed(0)
    save_unet(build_unet(ucfg).eval(), ucfg, root / "unet", {"note": "random, for tests"})
    pred = StepPredictor(len(COUNTS), 64, 16)
    save_predictor(pred.eval(), PredictorCfg(hidden=16), StepPredictorInfo(counts=COUNTS, margin=0.5), root / "pred")
    return {"root": root, "unet": root / "unet", "pred": root / "pred", "text": text}


def export_diffusion(out: Path, unet: Path, predictor: Path | None, step_control: Path | None = None, **sections):
    """A StepSaver artifact; sections: recipe sections as dicts (sampling={...}, quantization={...})."""
    from dynexport import methods
    from dynexport.recipe import StepSaverRecipe
    recipe = StepSaverRecipe(models={"unet": str(unet), "predictor": str(predictor or ""),
                                     "step_control": str(step_control or "")}, **sections)
    return methods.export("stepsaver", recipe, out)


# ---- exactness of sampling: the target's own distributions and a chi-square test ----

def target_dists(pipe, cfg, prompt: str):
    """Exact first-token distribution p1 [V] and second-token distributions p2[x1] of the target.
    cfg: a SamplingCfg."""
    import numpy as np

    from dynexport.runtime.generation import encode_prompt
    from dynexport.runtime.sampling import warp
    ids = encode_prompt(pipe.tokenizer, prompt)
    s = pipe.target
    s.reset()
    p1 = warp(s.forward(ids)[-1], cfg)
    s.commit(len(ids))
    p2 = {}
    for x1 in np.flatnonzero(p1):
        p2[int(x1)] = warp(s.forward([int(x1)])[-1], cfg)
        s.commit(0)  # masked: the cache stays at the prompt
    return p1, p2


# ---- the CLI, the torch blocker, graph inspection ----

EXE = [sys.executable, "-m", "dynexport"]


def run_cli(*args, cwd=None, code_prefix: str | None = None, timeout: int = 600):
    """`python -m dynexport ARGS` (code_prefix: Python run first, e.g. BLOCK_TORCH)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "250"}  # wide: help lines do not wrap
    main = f"import sys\n{code_prefix}\nfrom dynexport.cli import main\nsys.argv[0] = 'dynexport'\nmain()"
    cmd = EXE if code_prefix is None else [sys.executable, "-c", main]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("transformers", "nncf", "peft"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def ov_op_counts(xml) -> dict[str, int]:
    import openvino as ov
    counts: dict[str, int] = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def ov_low_precision_constants(xml) -> int:
    import openvino as ov
    low = ("u8", "i8", "u4", "i4")
    return sum(op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in low
               for op in ov.Core().read_model(str(xml)).get_ordered_ops())


def onnx_op_counts(path) -> dict[str, int]:
    import onnx
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts

def cpu_int8_flags() -> str:
    """The CPU's int8 dot-product instructions (for messages of tests whose int8 error depends on them)."""
    flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("flags")), [])
    return " ".join(f for f in flags if "vnni" in f or f.startswith("amx")) or "no VNNI / AMX"



def hf_greedy(model_dir: Path, prompt: str, n: int) -> list[int]:
    """transformers' greedy continuation (n new token ids, no EOS stop) of a checkpoint dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                      eos_token_id=None, pad_token_id=2)
    return out[0, ids.shape[1]:].tolist()


def speculative_pvalues(pipe, prompt: str, n: int, k, cfg) -> tuple[float, float]:
    """p-values of the first-token and the two-token distribution of n sampled speculative
    continuations (draft=k) vs the target's exact distributions; cfg: a SamplingCfg."""
    import numpy as np
    p1, p2 = target_dists(pipe, cfg, prompt)
    first, pairs = {}, {}
    for seed in range(n):
        t = pipe.generate(prompt, max_new_tokens=2, do_sample=True, temperature=cfg.temperature,
                          top_k=cfg.top_k, top_p=cfg.top_p, seed=seed, draft=k, ignore_eos=True).tokens[0]
        first[t[0]] = first.get(t[0], 0) + 1
        pairs[tuple(t)] = pairs.get(tuple(t), 0) + 1
    exp1 = {int(i): float(p1[i]) for i in np.flatnonzero(p1)}
    exp2 = {(a, int(b)): float(p1[a] * p2[a][b]) for a in p2 for b in np.flatnonzero(p2[a])}
    return pvalue(exp1, first, n), pvalue(exp2, pairs, n)
