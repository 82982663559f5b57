"""Train the speculative-decoding draft for SmolLM2-135M-Instruct on CPU → dynexport/weights/speculative/<name>/
(committed delta).

    python scripts/train_draft.py [--layers 0,1,2,3] [--vocab-size 8192] [--steps 600]
        [--out dynexport/weights/speculative/smollm2-l4]
    python scripts/train_draft.py --init dynexport/weights/speculative/smollm2-135m-draft --onpolicy-prompts 320
        --steps 500 --lr 6e-4

Resumable: data, teacher top-k shards and training checkpoints live in --work (default
$DYNEXPORT_CACHE/draft-work/<name>); rerun the same command after an interruption. Progress goes to
stdout (run it with nohup and a log file). See dynexport/train/draft.py for the method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dynexport import paths
from dynexport.assets import cache_dir
from dynexport.models.gguf import smollm2_dir
from dynexport.train.draft import DraftCfg, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="0,1,2,3")
    ap.add_argument("--vocab-size", type=int, default=DraftCfg.vocab_size)
    ap.add_argument("--rank", type=int, default=DraftCfg.lora_rank)
    ap.add_argument("--steps", type=int, default=DraftCfg.steps)
    ap.add_argument("--batch", type=int, default=DraftCfg.batch)
    ap.add_argument("--lr", type=float, default=DraftCfg.lr)
    ap.add_argument("--text-chars", type=int, default=DraftCfg.text_chars)
    ap.add_argument("--gen-prompts", type=int, default=DraftCfg.gen_prompts)
    ap.add_argument("--onpolicy-prompts", type=int, default=DraftCfg.onpolicy_prompts,
                    help="extra target continuations (half greedy) with top-k recorded while generating")
    ap.add_argument("--init", type=Path, default=None, help="draft delta dir to start from (warm start)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=paths.committed("speculative") / "smollm2-135m-draft")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DraftCfg(layers=tuple(int(x) for x in args.layers.split(",")), vocab_size=args.vocab_size,
                   lora_rank=args.rank, lora_alpha=float(args.rank), steps=args.steps, batch=args.batch,
                   lr=args.lr, text_chars=args.text_chars, gen_prompts=args.gen_prompts,
                   onpolicy_prompts=args.onpolicy_prompts)
    data_key = f"t{cfg.text_chars}-g{cfg.gen_prompts}-s{cfg.seq_len}-k{cfg.topk}"
    work = args.work or cache_dir() / "draft-work" / data_key
    run_dir = work / (f"run-{args.layers.replace(',', '_')}-v{cfg.vocab_size}-r{cfg.lora_rank}-s{cfg.steps}"
                      f"-on{cfg.onpolicy_prompts}" + (f"-init-{args.init.name}" if args.init else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:7.0f}s] {msg}", flush=True)
    summary = run(smollm2_dir(), args.out, work, cfg, log, run_dir=run_dir, init=args.init)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
