"""Inference-compute strategies on exported LMs: one entry point,
`solve(pipe, task, problem, strategy, budget, seed, reward_pipe, config) → Solution(answer, candidates, stats)`.

- greedy: one greedy completion (the budget is ignored);
- best_of_n: N samples, the one with the highest reward;
- majority: N samples, the answer whose voting key (`task.key`) most samples share;
- weighted: N samples, votes weighted by reward (Wu et al. 2024's weighted majority voting);
- rebase: the reward-balanced tree search of Wu et al. 2024 (runtime/rebase.py), its finished
  solutions aggregated by weighted voting;
- beam: token-level beam search of width N on the generator's log-probs (runtime/beam.py), a baseline.

Samples share one prefill of the prompt and are decoded as one batch (runtime/batch.py). Rewards, each
in [0, 1] (the `reward` setting picks one): "self" = exp(the generator's mean token log-prob); "lm" =
exp(the reward model's mean token log-prob of the answer: an outcome reward from a larger model);
"task" = the task's own reward (HumanEval: the docstring-example pass rate); "product" = lm × task
(lm alone where the task gives none). `select(strategy, candidates, reward)` is the choice itself, a pure
function, so a benchmark can subsample one pool at every budget.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .batch import BatchLM, Row, prefill, sample_rows, score_rows
from .compute import ModelCompute, shared_prefix
from .generation import check_context, encode_prompt
from .sampling import SamplingCfg
from .tasks import Task, cut

STRATEGIES = ("greedy", "best_of_n", "majority", "weighted", "rebase", "beam")
REWARDS = ("self", "lm", "task", "product")
POOLED = ("best_of_n", "majority", "weighted")  # strategies that choose among independent samples


@dataclass(frozen=True)
class SolveConfig:
    """How to solve. Defaults defined here once."""
    temperature: float = 0.7  # sampling (best_of_n, voting, REBASE expansions)
    max_new_tokens: int = 384
    reward: str = "product"  # one of REWARDS: what best_of_n maximises and weighted voting weighs
    rebase_temperature: float = 0.1  # T_b: the paper's 0.1 (its public code defaults to 0.2)
    step_delimiter: str = "\n"  # a REBASE step: one line of code
    max_step_tokens: int = 64
    score_batch_tokens: int = 1024  # rows × length of one reward-model scoring call (its logits: × vocab × 4 B)

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise InputError(f"reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise InputError(f"temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.rebase_temperature, (int, float)) and self.rebase_temperature > 0):
            raise InputError(f"rebase_temperature must be > 0, got {self.rebase_temperature!r}")
        for name in ("max_new_tokens", "max_step_tokens", "score_batch_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.step_delimiter, str) or not self.step_delimiter:
            raise InputError("step_delimiter must be a non-empty string")


@dataclass(frozen=True)
class Candidate:
    text: str  # the completion, cut at the task's stop strings
    tokens: tuple[int, ...]  # as generated (the stop string's tokens included)
    answer: object | None  # task.extract(text); None: no answer
    rewards: dict[str, float | None] = field(default_factory=dict)  # REWARDS name → value in [0, 1]


@dataclass(frozen=True)
class SolveStats:
    strategy: str
    budget: int
    policy: ModelCompute
    reward: ModelCompute  # the reward model's share (zero when none was used)
    wall_s: float

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "budget": self.budget, "policy": self.policy.to_json(),
                "reward": self.reward.to_json(), "wall_s": self.wall_s}


@dataclass(frozen=True)
class Solution:
    answer: object | None  # None: no candidate yielded an answer ("no answer", not an error)
    candidates: tuple[Candidate, ...]
    stats: SolveStats

    @property
    def no_answer(self) -> bool:
        return self.answer is None


def check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    return int(budget)


def check_reward_model(pipe, reward_pipe) -> None:
    if reward_pipe is not None and reward_pipe.manifest.tokenizer.sha256 != pipe.manifest.tokenizer.sha256:
        raise InputError("the reward model's tokenizer differs from the generator's (tokenizer.json sha256); "
                         "it scores the generator's tokens, so both must share one tokenizer")


def prompt_ids(pipe, task: Task, problem: dict, max_new_tokens: int) -> list[int]:
    ids = encode_prompt(pipe.tokenizer, task.prompt(problem))
    check_context(len(ids), max_new_tokens, pipe.manifest.tokenizer.max_context)
    return ids


def stop_check(pipe, stops: Sequence[str]):
    """row → whether it has ended: an EOS token or a stop string in its text."""
    eos = set(pipe.manifest.tokenizer.eos_ids)
    decode = lambda toks: pipe.tokenizer.decode(toks, skip_special_tokens=True)
    return lambda row: row.tokens[-1] in eos or (bool(stops) and any(s in decode(row.tokens) for s in stops))


def sample_pool(pipe, task: Task, problem: dict, n: int, cfg: SolveConfig, rng: np.random.Generator,
                greedy: bool = False) -> tuple[list[Candidate], list[Row], ModelCompute]:
    """n completions of the problem's prompt: one prefill, then decoded as one batch."""
    ids = prompt_ids(pipe, task, problem, cfg.max_new_tokens)
    lm, graph, t0 = pipe.batch(), pipe.manifest.model, time.perf_counter()
    calls0 = lm.calls
    prefill(lm, ids[:-1])
    lm.fork([0] * n)
    sampling = SamplingCfg() if greedy else SamplingCfg(True, cfg.temperature)
    rows = sample_rows(lm, [ids[-1]] * n, sampling, rng, cfg.max_new_tokens, stop_check(pipe, task.stop_strings))
    compute = shared_prefix(graph, len(ids) - 1, [len(r.tokens) for r in rows], lm.calls - calls0,
                            time.perf_counter() - t0)
    return [candidate(pipe, task, problem, r) for r in rows], rows, compute


def candidate(pipe, task: Task, problem: dict, row: Row) -> Candidate:
    text = cut(pipe.tokenizer.decode(row.tokens, skip_special_tokens=True), task.stop_strings)
    self_reward = math.exp(float(np.mean(row.logprobs)))  # over every generated token
    return Candidate(text, tuple(row.tokens), task.extract(problem, text), {"self": self_reward})


def score_texts(reward_pipe, context: list[int], texts: Sequence[str], cfg: SolveConfig) -> tuple[list[float], ModelCompute]:
    """The reward model's mean token log-prob of each text (re-encoded on its own) after `context` ids:
    one prefill of the context, then the texts in batches whose rows × length stay under
    cfg.score_batch_tokens (row k of each call keeps the bare context for the next one)."""
    lm, graph, t0 = reward_pipe.batch(), reward_pipe.manifest.model, time.perf_counter()
    calls0 = lm.calls
    prefill(lm, context[:-1])
    seqs = [reward_pipe.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    out: list[float] = [-math.inf] * len(seqs)  # an empty text: reward exp(−inf) = 0
    chunks, cur = [], []
    for i in sorted((i for i in range(len(seqs)) if seqs[i]), key=lambda i: len(seqs[i])):  # similar lengths share a call
        if cur and (len(cur) + 2) * len(seqs[i]) > cfg.score_batch_tokens:
            chunks.append(cur)
            cur = []
        cur.append(i)
    for chunk in [*chunks, cur] if cur else chunks:
        for i, v in zip(chunk, _score_chunk(lm, context[-1], [seqs[i] for i in chunk])):
            out[i] = v
    compute = shared_prefix(graph, len(context) - 1, [len(q) for q in seqs], lm.calls - calls0,
                            time.perf_counter() - t0, generated=False)
    return out, compute


def _score_chunk(lm: BatchLM, pending: int, seqs: list[list[int]]) -> list[float]:
    """Mean log-prob of each seq after the one-row cache + pending; the cache keeps its bare row."""
    k = len(seqs)
    lm.fork([0] * (k + 1))  # rows 0..k−1 score, row k stays the bare context
    means = [float(np.mean(lp)) for lp in score_rows(lm, [pending] * (k + 1), [*seqs, []])[:k]]
    lm.fork([k])
    return means


def add_rewards(cands: list[Candidate], task: Task, problem: dict, lm_means: Sequence[float] | None) -> list[Candidate]:
    """Candidates with every reward filled in: task (None where it has none), lm and product (None
    without a reward model)."""
    out = []
    for i, c in enumerate(cands):
        r = dict(c.rewards)
        r["task"] = task.reward(problem, c.answer) if c.answer is not None else None
        r["lm"] = math.exp(lm_means[i]) if lm_means is not None else None
        r["product"] = None if r["lm"] is None else r["lm"] * (1.0 if r["task"] is None else r["task"])
        out.append(Candidate(c.text, c.tokens, c.answer, r))
    return out


def select(strategy: str, cands: Sequence[Candidate], keys: Sequence | None, reward: str) -> int | None:
    """Index of the chosen candidate (None: none has an answer). keys[i]: candidate i's voting key
    (needed by the votes). Ties go to the earliest candidate."""
    ok = [i for i, c in enumerate(cands) if c.answer is not None]
    if not ok:
        return None
    if strategy in ("greedy", "beam"):
        return ok[0]
    if strategy == "majority":
        votes = Counter(keys[i] for i in ok)
        best = max(votes.values())
        return next(i for i in ok if votes[keys[i]] == best)
    weights = [_reward(cands[i], reward) for i in ok]
    if strategy == "best_of_n":
        return ok[int(np.argmax(weights))]
    if strategy in ("weighted", "rebase"):
        total: dict = {}
        for i, w in zip(ok, weights):
            total[keys[i]] = total.get(keys[i], 0.0) + w
        best = max(total.values())
        return next(i for i in ok if total[keys[i]] == best)
    raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def _reward(c: Candidate, name: str) -> float:
    """The named reward; a task reward the task has none of for this problem (HumanEval without docstring
    examples) counts as 1.0 for every candidate, so weighted voting becomes majority voting there."""
    v = c.rewards.get(name)
    if v is None and name == "task":
        return 1.0
    if v is None:
        raise InputError(f"reward {name!r} is not available for these candidates "
                         "(lm and product need a reward model: pass reward_pipe)")
    return float(v)


def solve(pipe, task: Task, problem: dict, strategy: str = "weighted", budget: int = 4, seed: int = 0,
          reward_pipe=None, config: SolveConfig | None = None) -> Solution:
    """Solve one problem with a strategy at a budget (samples, beams or REBASE's width). `pipe`: the
    generator; `reward_pipe`: the reward
    model for the lm / product rewards (same tokenizer). Both are lm artifacts (`LMPipeline`)."""
    cfg = config or SolveConfig()
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    budget = check_budget(budget)
    check_reward_model(pipe, reward_pipe)
    needs_lm = strategy in ("best_of_n", "weighted", "rebase") and cfg.reward in ("lm", "product")
    if needs_lm and reward_pipe is None:
        raise InputError(f"reward {cfg.reward!r} needs a reward model (reward_pipe), or choose reward='self' / 'task'")
    rng, t0 = np.random.default_rng(seed), time.perf_counter()
    if strategy == "rebase":
        from .rebase import rebase
        cands, policy, reward = rebase(pipe, reward_pipe if needs_lm else None, task, problem, budget, cfg, rng)
    elif strategy == "beam":
        from .beam import beam_search
        cands, policy = beam_search(pipe, task, problem, budget, cfg)
        reward = ModelCompute()
    else:
        n = 1 if strategy == "greedy" else budget
        cands, _, policy = sample_pool(pipe, task, problem, n, cfg, rng, greedy=strategy == "greedy")
        reward = ModelCompute()
        if needs_lm:
            means, reward = score_texts(reward_pipe, prompt_ids(pipe, task, problem, cfg.max_new_tokens),
                                        [c.text for c in cands], cfg)
        cands = add_rewards(cands, task, problem, means if needs_lm else None)
    keys = [task.key(problem, c.answer) if c.answer is not None else None for c in cands]
    chosen = select(strategy, cands, keys, cfg.reward)
    stats = SolveStats(strategy, budget, policy, reward, time.perf_counter() - t0)
    return Solution(None if chosen is None else cands[chosen].answer, tuple(cands), stats)
