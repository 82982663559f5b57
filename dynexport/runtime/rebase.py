"""REBASE (Wu et al. 2024, "Inference Scaling Laws", arXiv 2408.00724): reward-balanced tree search.

Sample `budget` first steps; at each depth score every live node with the reward and give node j
round(B · softmax(R_j / T_b)) children, B the budget left after the solutions that finished. A step
ends at the step delimiter (a line of code), EOS or a stop string. Children continue their parent's
KV cache (`BatchLM.fork`, no recomputation), in the generator and in the reward model alike.

No process reward model ships offline, so a node's reward is a substitute: the reward model's
exp(mean token log-prob) over the solution so far (an outcome model used at every step), or
without one the generator's own (the free self-reward). The finished solutions are the candidates.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .batch import BatchLM, Row, prefill, sample_rows, score_rows
from .compute import ModelCompute, tokens_flops
from .sampling import SamplingCfg
from .strategies import (
    Candidate,
    SolveConfig,
    add_rewards,
    candidate,
    prompt_ids,
    stop_check,
)


@dataclass
class Node:
    tokens: list[int] = field(default_factory=list)  # the solution so far (generated ids)
    logprobs: list[float] = field(default_factory=list)  # the generator's, per token
    rm_logprobs: list[float] = field(default_factory=list)  # the reward model's, per token
    row: int = 0  # its row in both caches (which hold every token but the last)
    pending: int = 0  # its last token, not yet in the caches
    done: bool = False

    def reward(self, use_rm: bool) -> float:
        return math.exp(float(np.mean(self.rm_logprobs if use_rm else self.logprobs)))


def balance(rewards: list[float], budget: int, temperature: float) -> list[int]:
    """Children per node: round(budget · softmax(R / T_b)) (the paper's rule; the sum may differ from
    the budget by rounding); when every count rounds to 0 the best node still gets one, so a search
    with budget left never stops without a solution."""
    z = np.asarray(rewards, np.float64) / temperature
    w = np.exp(z - z.max())
    n = [int(round(budget * x)) for x in w / w.sum()]
    if budget > 0 and not any(n):
        n[int(np.argmax(z))] = 1
    return n


def rebase(pipe, reward_pipe, task, problem: dict, budget: int, cfg: SolveConfig,
           rng: np.random.Generator) -> tuple[list[Candidate], ModelCompute, ModelCompute]:
    """The finished solutions of one REBASE tree, with the generator's and the reward model's compute."""
    ids = prompt_ids(pipe, task, problem, cfg.max_new_tokens)
    pol, t0 = pipe.batch(), time.perf_counter()
    rm = reward_pipe.batch() if reward_pipe is not None else None
    lms = [pol] + ([rm] if rm else [])
    calls0 = [lm.calls for lm in lms]
    for lm in lms:
        prefill(lm, ids[:-1])
    policy, reward = ModelCompute(prefill_tokens=len(ids) - 1), ModelCompute(prefill_tokens=len(ids) - 1 if rm else 0)
    policy.flops = tokens_flops(pipe.manifest.model, len(ids) - 1, 0)
    if rm:
        reward.flops = tokens_flops(reward_pipe.manifest.model, len(ids) - 1, 0)
    ended, step_end = stop_check(pipe, task.stop_strings), _step_end(pipe, cfg.step_delimiter)
    sampling = SamplingCfg(True, cfg.temperature)
    parents, counts, finished, width = [Node(pending=ids[-1])], [budget], [], budget
    while width > 0 and parents:
        rows = [p for p, c in zip(parents, counts) for _ in range(c)]
        for lm in lms:
            lm.fork([p.row for p in rows])
        steps = sample_rows(pol, [p.pending for p in rows], sampling, rng, cfg.max_step_tokens, step_end,
                            keep_finished=True)
        children = [Node(p.tokens + s.tokens, p.logprobs + s.logprobs, list(p.rm_logprobs), j, s.tokens[-1])
                    for j, (p, s) in enumerate(zip(rows, steps))]
        _account(policy, pipe.manifest.model, len(ids) - 1, rows, steps, generated=True)
        if rm:
            _score_steps(rm, rows, steps, children)
            _account(reward, reward_pipe.manifest.model, len(ids) - 1, rows, steps, generated=False)
        for c in children:
            c.done = ended(c) or len(c.tokens) >= cfg.max_new_tokens
        finished += [c for c in children if c.done]
        width -= sum(c.done for c in children)
        live = [c for c in children if not c.done]
        if width <= 0 or not live:
            break
        n = balance([c.reward(rm is not None) for c in live], width, cfg.rebase_temperature)
        parents, counts = [c for c, k in zip(live, n) if k > 0], [k for k in n if k > 0]
    policy.calls, policy.wall_s = pol.calls - calls0[0], time.perf_counter() - t0
    if rm:
        reward.calls = rm.calls - calls0[1]
    cands = [_candidate(pipe, task, problem, c) for c in finished]
    means = [float(np.mean(c.rm_logprobs)) for c in finished] if rm else None
    return add_rewards(cands, task, problem, means), policy, reward


def _step_end(pipe, delimiter: str):
    eos = set(pipe.manifest.tokenizer.eos_ids)
    return lambda row: row.tokens[-1] in eos or delimiter in pipe.tokenizer.decode(row.tokens, skip_special_tokens=True)


def _score_steps(rm: BatchLM, rows: list[Node], steps, children: list[Node]) -> None:
    """Feed each child's step to the reward model's cache (row j continues its parent) and record the
    log-prob of every step token."""
    for child, lp in zip(children, score_rows(rm, [p.pending for p in rows], [s.tokens for s in steps])):
        child.rm_logprobs += lp.tolist()


def _account(c: ModelCompute, graph, prompt: int, rows: list[Node], steps, generated: bool) -> None:
    for p, s in zip(rows, steps):
        n, ctx = len(s.tokens), prompt + len(p.tokens)
        c.flops += tokens_flops(graph, n, ctx)
        c.independent_flops += tokens_flops(graph, ctx + n, 0)  # no shared cache: the whole path again
        if generated:
            c.generated_tokens += n
        else:
            c.scored_tokens += n


def _candidate(pipe, task, problem: dict, node: Node) -> Candidate:
    return candidate(pipe, task, problem, Row(node.row, node.tokens, node.logprobs, True))
