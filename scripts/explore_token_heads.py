"""Stronger cheap exit heads: compare head designs on the frozen encoder's per-token features.

    python scripts/explore_token_heads.py --checkpoint dynexport/weights/early_exit/all-mpnet-base-v2-deebert-<key>
        [--layers 1 2 3 4 6] [--train-examples 12000] [--out benchmarks/exit_heads.json]

One pass of the stage-1 encoder over the train subset, validation and test keeps the token states of
the chosen layers (fp16, unpadded, cached under ~/.cache/dynexport/features) and the final layer's
pooled features; then per layer, on the same train subset, every variant is trained:
- `mlp`: the current head (masked mean → 256 → tanh → classes), retrained on the subset;
- `attention`: attention pooling (a learned query over the tokens, with the mean) → the same MLP;
- `attention_only`: the attention-pooled vector alone → the same MLP (the current head's size + H + 1);
- `layer`: one small transformer layer at width 192 (4 heads, FFN 384) on a projection, then mean → classes;
- `feature_kd`: the current head plus a linear map of its hidden to the final layer's pooled features
  (MSE, weight 1): distillation from the final head's *features* rather than its logits.
Each is reported with its parameter count, per-layer validation and test accuracy, and its val/test
logits are saved so that the exit rules can be fitted on them (`--out` JSON + `.npz`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dynexport.assets import cache_dir
from dynexport.models.encoder import extended_mask, masked_mean, run_layers
from dynexport.train.bert_exits import frozen_encoder

ROOT = Path(__file__).resolve().parents[1]


class AttentionPool(nn.Module):
    """Learned-query attention over the real tokens (concatenated with the masked mean unless
    `with_mean` is off) → MLP."""

    def __init__(self, hidden: int, classes: int, width: int = 256, with_mean: bool = True):
        super().__init__()
        self.score, self.with_mean = nn.Linear(hidden, 1), with_mean
        self.dense = nn.Linear((2 if with_mean else 1) * hidden, width)
        self.out, self.drop = nn.Linear(width, classes), nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [b, s, H], [b, s]
        a = self.score(h).squeeze(-1).masked_fill(mask == 0, -1e4).softmax(-1)  # [b, s]
        pooled = (a.unsqueeze(-1) * h).sum(1)  # [b, H]
        if self.with_mean:
            pooled = torch.cat([pooled, masked_mean(h, mask)], -1)  # [b, 2H]
        return self.out(self.drop(torch.tanh(self.dense(self.drop(pooled)))))


class SmallLayer(nn.Module):
    """Project to `width`, one pre-norm transformer layer (own attention + FFN), masked mean → classes."""

    def __init__(self, hidden: int, classes: int, width: int = 192, heads: int = 4):
        super().__init__()
        self.proj, self.heads = nn.Linear(hidden, width), heads
        self.n1, self.n2, self.n3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.o = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.out, self.drop = nn.Linear(width, classes), nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.proj(h)  # [b, s, w]
        b, s, w = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / (w // self.heads) ** 0.5 + extended_mask(mask)  # [b, heads, s, s]
        x = x + self.drop(self.o((att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, w)))
        x = x + self.drop(self.ffn(self.n2(x)))
        return self.out(self.drop(masked_mean(self.n3(x), mask)))


class MeanMLP(nn.Module):
    """The current head; `kd` adds a map of its hidden to the final pooled features."""

    def __init__(self, hidden: int, classes: int, width: int = 256, kd: bool = False):
        super().__init__()
        self.dense, self.out, self.drop = nn.Linear(hidden, width), nn.Linear(width, classes), nn.Dropout(0.1)
        self.kd = nn.Linear(width, hidden) if kd else None

    def forward(self, h: torch.Tensor, mask: torch.Tensor, with_hidden: bool = False):
        z = torch.tanh(self.dense(self.drop(masked_mean(h, mask))))
        logits = self.out(self.drop(z))
        return (logits, z) if with_hidden else logits


VARIANTS = {"mlp": lambda H, C: MeanMLP(H, C), "attention": AttentionPool,
            "attention_only": lambda H, C: AttentionPool(H, C, with_mean=False), "layer": SmallLayer,
            "feature_kd": lambda H, C: MeanMLP(H, C, kd=True)}


@torch.no_grad()
def features(model, family, enc, texts: list[str], layers: list[int], num_layers: int, path: Path):
    """{layer: list of [len, H] fp16 token states} for `layers` and [n, H] pooled final features; cached."""
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        lens = z["lens"]
        cut = np.cumsum(lens)[:-1]
        return {k: np.split(z[f"l{k}"], cut) for k in layers}, z["final"]
    toks: dict[int, list] = {k: [None] * len(texts) for k in layers}
    final = np.zeros((len(texts), model.config.hidden_size), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for i in tqdm(range(0, len(order), 64), desc=f"features {path.stem}", mininterval=10):
        idx = order[i:i + 64]
        b = enc([texts[j] for j in idx])
        ids, mask = torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask)
        h, ext, start = model.embeddings(input_ids=ids), extended_mask(mask), 0
        for k in sorted(set(layers) | {num_layers}):
            h = run_layers(model, family, h, ext, start, k)
            start = k
            if k in layers:
                for r, j in enumerate(idx):
                    toks[k][j] = h[r, : int(mask[r].sum())].numpy().astype(np.float16)
        final[idx] = masked_mean(h, mask).numpy()
    lens = np.array([len(t) for t in toks[layers[0]]])
    np.savez(path, lens=lens, final=final, **{f"l{k}": np.concatenate(toks[k]) for k in layers})
    return toks, final


def padded(rows: list[np.ndarray], idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of examples `idx` → [b, s, H] float32, mask [b, s] int64."""
    s = max(len(rows[j]) for j in idx)
    h = np.zeros((len(idx), s, rows[idx[0]].shape[1]), np.float32)
    m = np.zeros((len(idx), s), np.int64)
    for r, j in enumerate(idx):
        h[r, : len(rows[j])], m[r, : len(rows[j])] = rows[j], 1
    return torch.from_numpy(h), torch.from_numpy(m)


def train(name: str, rows, y: torch.Tensor, final: torch.Tensor, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    head = VARIANTS[name](rows[0].shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(y) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.1)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            h, m = padded(rows, idx.tolist())
            if name == "feature_kd":
                logits, z = head(h, m, with_hidden=True)
                loss = nn.functional.cross_entropy(logits, y[idx]) + nn.functional.mse_loss(head.kd(z), final[idx])
            else:
                loss = nn.functional.cross_entropy(head(h, m), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def predict(head: nn.Module, rows) -> np.ndarray:
    out = [head(*padded(rows, list(range(i, min(i + 256, len(rows)))))) for i in range(0, len(rows), 256)]
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    ap.add_argument("--train-examples", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "exit_heads.json")
    args = ap.parse_args()
    fz = frozen_encoder(args.checkpoint)
    splits, family, base, heads, enc, num_layers = fz.splits, fz.family, fz.base, fz.heads, fz.enc, fz.num_layers
    feat_dir = cache_dir() / "features" / args.checkpoint.name
    feat_dir.mkdir(parents=True, exist_ok=True)
    sets = {"train": splits.train[: args.train_examples], "val": splits.val, "test": splits.test}
    feats = {s: features(base, family, enc, [e.text for e in ex], args.layers, num_layers,
                         feat_dir / f"{s}-{len(ex)}-{'-'.join(map(str, args.layers))}.npz") for s, ex in sets.items()}
    labels = {s: np.array([e.label for e in ex]) for s, ex in sets.items()}
    ytr, final_tr = torch.from_numpy(labels["train"]), torch.from_numpy(feats["train"][1])
    results, logits = {"args": {k: str(v) for k, v in vars(args).items()}, "layers": {}}, {}
    for k in args.layers:
        rows = feats["train"][0][k]
        res = results["layers"][str(k)] = {}
        with torch.no_grad():  # the committed head (trained on the whole train split) as reference
            for s in ("val", "test"):
                logits[f"committed_{k}_{s}"] = predict(heads[k], feats[s][0][k])
        res["committed"] = {s: round(float((logits[f"committed_{k}_{s}"].argmax(-1) == labels[s]).mean() * 100), 2)
                            for s in ("val", "test")}
        for name in args.variants:
            t0 = time.time()
            with torch.enable_grad():
                head = train(name, rows, ytr, final_tr, args.epochs)
            row = {"params": sum(p.numel() for n, p in head.named_parameters() if not n.startswith("kd.")),
                   "train_s": round(time.time() - t0, 1)}
            for s in ("val", "test"):
                logits[f"{name}_{k}_{s}"] = predict(head, feats[s][0][k])
                row[s] = round(float((logits[f"{name}_{k}_{s}"].argmax(-1) == labels[s]).mean() * 100), 2)
            res[name] = row
            print(f"layer {k} {name:10s} val {row['val']:.2f} test {row['test']:.2f} "
                  f"({row['params']} params, {row['train_s']} s); committed val {res['committed']['val']}", flush=True)
        args.out.write_text(json.dumps(results, indent=1))
        np.savez(args.out.with_suffix(".npz"), **logits)


if __name__ == "__main__":
    main()
