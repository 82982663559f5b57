"""Token-level beam search of width N on the generator's log-probs, the classic decoding baseline of
the inference strategies: each step keeps the N best (beam, token) extensions by summed log-prob,
forking the beams' KV cache rows (`BatchLM.fork`) instead of recomputing them. A beam that reaches EOS
or a stop string is set aside; the search ends when N beams are set aside or the token limit is
reached. Candidates come out best first by mean token log-prob (length-normalised)."""

from __future__ import annotations

import time

import numpy as np

from .batch import Row, log_softmax, prefill
from .compute import ModelCompute, tokens_flops
from .strategies import Candidate, SolveConfig, candidate, prompt_ids, stop_check


def beam_search(pipe, task, problem: dict, width: int, cfg: SolveConfig) -> tuple[list[Candidate], ModelCompute]:
    ids = prompt_ids(pipe, task, problem, cfg.max_new_tokens)
    lm, graph, t0 = pipe.batch(), pipe.manifest.model, time.perf_counter()
    calls0 = lm.calls
    prefill(lm, ids[:-1])
    ended = stop_check(pipe, task.stop_strings)
    beams = [Row(0)]  # live beams: tokens and per-token log-probs so far
    feed, done = [ids[-1]], []
    compute = ModelCompute(prefill_tokens=len(ids) - 1, flops=tokens_flops(graph, len(ids) - 1, 0))
    for step in range(cfg.max_new_tokens):
        lp = log_softmax(lm.append(np.asarray(feed)[:, None])[:, 0])  # [beams, V']
        compute.flops += len(beams) * tokens_flops(graph, 1, len(ids) - 1 + step)
        compute.generated_tokens += len(beams)
        total = lp + np.array([sum(b.logprobs) for b in beams])[:, None]
        flat = np.argpartition(-total.ravel(), width - 1)[:width] if total.size > width else np.arange(total.size)
        flat = flat[np.argsort(-total.ravel()[flat])]
        live = []  # (parent beam, row), best first
        for f in flat:
            b, c = divmod(int(f), total.shape[1])
            row = Row(0, beams[b].tokens + [int(lm.full_ids(c))], beams[b].logprobs + [float(lp[b, c])])
            row.done = ended(row) or step + 1 >= cfg.max_new_tokens
            if row.done:
                done.append(row)
            else:
                live.append((b, row))
        live = live[: width - len(done)]
        if not live:
            break
        lm.fork([b for b, _ in live])
        beams, feed = [r for _, r in live], [r.tokens[-1] for _, r in live]
    compute.calls, compute.wall_s = lm.calls - calls0, time.perf_counter() - t0
    # without a shared prefix every beam would prefill the prompt itself
    compute.independent_flops = compute.flops + (width - 1) * tokens_flops(graph, len(ids) - 1, 0)
    best = sorted(done or beams, key=lambda r: -float(np.mean(r.logprobs)))
    return [candidate(pipe, task, problem, r) for r in best[:width]], compute
