"""Train the EAGLE head for SmolLM2-135M-Instruct on CPU → dynexport/weights/eagle/<name>/ (committed, fp16).

    python scripts/train_eagle.py [--vocab-size 8192] [--depth 3] [--steps 800]
        [--out dynexport/weights/eagle/smollm2-135m-eagle]
    python scripts/train_eagle.py --data-only     # compute the target's features and stop
    python scripts/train_eagle.py --target DIR --out OUT   # another Llama-family target
    python scripts/train_eagle.py --init dynexport/weights/eagle/smollm2-135m-eagle --steps 1200 --lr 7e-4
        --eval-every 200                          # train an existing head further (a new cosine schedule)
    python scripts/train_eagle.py --target qwen2.5-coder-1.5b --openvino --out ~/.cache/dynexport/heads/qwen-1.5b
                                              # a large target: data made with its int8 OpenVINO graph

Data (see dynexport/train/eagle.py): the separate draft's token chunks and on-policy generations
(cached in $DYNEXPORT_CACHE/draft-work/…, made on first use) and the target's features, computed
once into --work (default $DYNEXPORT_CACHE/eagle-work). Another --target (a local Llama-family
checkpoint dir: config.json, model.safetensors, tokenizer files) gets its own data and feature dirs
(keyed by its weights' sha256) and its own head; export it with
`dynexport export eagle -m DIR --head OUT OUT_DIR`.
--openvino (for targets of 1B+, where the torch feature pass takes hours per 0.5 M tokens): the data
are real stdlib code and the target's own greedy continuations of code prompts, with features from the
target's int8 OpenVINO graph (`train/eagle_data.py`), under --work/openvino-<sha>.
Resumable: rerun the same command after an interruption. Progress goes to stdout (run it with nohup
and a log file).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from dynexport import paths
from dynexport.assets import cache_dir
from dynexport.manifest import sha256_file
from dynexport.models.gguf import smollm2_dir
from dynexport.models.lm_sources import resolve_lm
from dynexport.train.eagle import EagleCfg, chain_acceptance, load_data, train_head
from dynexport.train.eagle_data import openvino_data

DRAFT_DATA = "t1500000-g96-s256-k32"  # the draft's data key (train_draft.py defaults)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=None,
                    help="Llama-family checkpoint dir or embedded LM name (qwen2.5-coder-1.5b) "
                         "[default: SmolLM2-135M-Instruct from the offline assets]")
    ap.add_argument("--openvino", action="store_true",
                    help="make the data with the target's int8 OpenVINO graph (code + greedy continuations)")
    ap.add_argument("--real-chunks", type=int, default=1600, help="with --openvino: 256-token chunks of real code")
    ap.add_argument("--vocab-size", type=int, default=EagleCfg.vocab_size, help="0 = full vocabulary")
    ap.add_argument("--depth", type=int, default=EagleCfg.depth)
    ap.add_argument("--ffn", type=int, default=EagleCfg.ffn, help="the head layer's MLP width (0 = the target's)")
    ap.add_argument("--steps", type=int, default=EagleCfg.steps)
    ap.add_argument("--batch", type=int, default=EagleCfg.batch)
    ap.add_argument("--lr", type=float, default=EagleCfg.lr)
    ap.add_argument("--init", type=Path, default=None,
                    help="warm start from this head dir (its layer, fc and draft vocabulary); a new cosine schedule")
    ap.add_argument("--eval-every", type=int, default=EagleCfg.eval_every)
    ap.add_argument("--onpolicy-prompts", type=int, default=320)
    ap.add_argument("--bf16", action="store_true", help="train under CPU bf16 autocast (fp32 master weights)")
    ap.add_argument("--data-only", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None,
                    help="[default: dynexport/weights/eagle/smollm2-135m-eagle; required with --target]")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = EagleCfg(vocab_size=args.vocab_size, depth=args.depth, ffn=args.ffn, steps=args.steps, batch=args.batch,
                   lr=args.lr, eval_every=args.eval_every, bf16=args.bf16)
    if args.target is not None and args.out is None:
        ap.error("--target needs --out (the head dir to write)")
    out = args.out or paths.committed("eagle") / "smollm2-135m-eagle"
    target_dir = resolve_lm(args.target) if args.target else smollm2_dir()
    tag = "" if args.target is None else "-" + sha256_file(target_dir / "model.safetensors")[:12]
    work = args.work or cache_dir() / "eagle-work"
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:7.0f}s] {msg}", flush=True)
    if args.openvino:
        data = openvino_data(target_dir, features_graph(target_dir, work / f"graph{tag}", log),
                             work / f"openvino{tag}", args.real_chunks, args.onpolicy_prompts, threads=args.threads,
                             log=log)
    else:
        data = load_data(target_dir, cache_dir() / "draft-work" / (DRAFT_DATA + tag), work / f"features{tag}",
                         args.onpolicy_prompts, log)
    if args.data_only:
        return
    init = f"-init-{args.init.name}" if args.init else ""
    ffn = f"-f{cfg.ffn}" if cfg.ffn else ""
    bf16 = "-bf16" if cfg.bf16 else ""
    run_dir = work / f"run-v{cfg.vocab_size}-d{cfg.depth}{ffn}-s{cfg.steps}-b{cfg.batch}-lr{cfg.lr}{bf16}{init}{tag}"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = train_and_save(data, cfg, run_dir, out, log, args.init)
    print(json.dumps(summary, indent=1))


def features_graph(target_dir: Path, out: Path, log) -> Path:
    """The target as a stateful int8 OpenVINO graph with a `hidden` output (as the EAGLE artifact ships it)."""
    from dynexport.atomic import atomic_output_dir
    from dynexport.export.speculative import write_lm
    from dynexport.models.lm_sources import target_source
    if not (out / "target.xml").is_file():
        log(f"exporting the int8 feature graph of {target_dir} → {out}")
        with atomic_output_dir(out, overwrite=True) as tmp:
            write_lm(target_source(target_dir, features=True), "target", tmp, "int8", ("openvino",))
    return out / "target.xml"


def train_and_save(data: dict, cfg: EagleCfg, run_dir: Path, out: Path, log, init: Path | None = None) -> dict:
    from dynexport.models.eagle_head import init_head, load_head, save_head
    from dynexport.train.draft import choose_vocab, vocab_coverage
    lcfg, sd, sha, n = data["target"]
    ids, feats, top1 = data["real"]
    on_ids, on_feats, on_top1 = data["onpolicy"]
    ev = slice(0, cfg.eval_chunks)  # held out: the draft's eval chunks and on-policy shard 0 (16 greedy)
    train_ids = torch.cat([ids[cfg.eval_chunks:], on_ids[16:]])
    train_feats = torch.cat([feats[cfg.eval_chunks:], on_feats[16:]])
    train_top1 = torch.cat([top1[cfg.eval_chunks:], on_top1[16:]])
    if init:  # warm start: the earlier head's weights and vocabulary; its training record is kept
        head, spec = load_head(init, lcfg, sd, sha)
        vocab_ids, earlier = spec["vocab_ids"], spec["training"]
        if cfg.vocab_size not in (0, len(vocab_ids)) or (cfg.vocab_size == 0 and len(vocab_ids) != lcfg_vocab(sd)):
            raise SystemExit(f"--init {init} has a {len(vocab_ids)}-token draft vocabulary, "
                             f"not --vocab-size {cfg.vocab_size}")
    else:
        vocab_ids = (torch.arange(lcfg_vocab(sd)) if cfg.vocab_size == 0
                     else choose_vocab(train_top1, cfg.vocab_size, data["eos_ids"]))  # EOS always draftable
        head, earlier = init_head(lcfg, sd, vocab_ids, n, ffn=cfg.ffn), None

    def evaluate() -> dict:
        return {"real": chain_acceptance(head, ids[ev], feats[ev], top1[ev], vocab_ids, 5),
                "onpolicy_greedy": chain_acceptance(head, on_ids[:16], on_feats[:16], on_top1[:16], vocab_ids, 5)}

    coverage = vocab_coverage(train_top1, vocab_ids)
    before = evaluate()
    log(f"vocab {len(vocab_ids)} covers {coverage:.4f} of target top-1; before training {before}")
    train_head(head.train(), (train_ids, train_feats), cfg, run_dir / "train.pt", log, evaluate)
    after = evaluate()
    log(f"after training {after}")
    summary = {"cfg": asdict(cfg), "train_chunks": len(train_ids), "vocab_coverage": coverage,
               "before": before, "after": after} | ({"warm_start": earlier} if earlier else {})
    save_head(head, vocab_ids, sha, summary, out)
    return summary


def lcfg_vocab(sd: dict) -> int:
    return int(sd["model.embed_tokens.weight"].shape[0])


if __name__ == "__main__":
    main()
