"""EAGLE decoding: the head drafts a token tree from the target's features, the target verifies it in one call.

State between rounds: the target has committed m tokens and `x` (the token at position m) is pending;
the head has committed its inputs (f_j, x_{j+1}) for j < m, and its last output row gives f̂_m and the
draft distribution of x_{m+1}. One round:

    draft   : grow a tree by the draft's confidence (EAGLE-2): the children of a node are the top-k
              tokens of its draft distribution, a node's score is the product of the draft
              probabilities on its path; per depth the `topk` best new nodes are expanded by one head
              call (inputs: each node's token and its parent's f̂, attending to its ancestors).
              Dynamic trees stop deepening when even an optimistic next depth (each expanded node's
              best child as likely as the node itself) cannot raise the expected tokens per ms
    size    : keep the n best-scored nodes (ancestor-closed), n ≤ max_tokens chosen to maximise
              (1 + Σ scores) / (target_ms(n + 1) + head calls' ms): expected tokens per round over
              its time, from the target's measured call times and the head's cost ratio c (manifest;
              a head call on m tokens is taken to cost c · target_ms(m))
    verify  : target([x, tree]) with the tree's attention mask → logits and features, one call
    accept  : greedy: follow the child equal to the target's argmax; sampling: recursive rejection
              over the node's children in score order — child c is accepted with probability p(c),
              else p loses c and is renormalised (an exact rejection step with a point-mass proposal,
              so the output follows the target's distribution); then one token from what is left
    update  : the target keeps x and the accepted path; the head is re-run on the accepted tokens
              with the target's true features (its draft-tree slots are masked)

A chain of k tokens is the tree with topk = 1 and n = k. `FixedDraft(0)` runs the target alone. The
round and its parts are free functions; the loop, stopping, streaming and stats are `generation.generate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import EagleManifest
from .costs import curve_points
from .generation import Decoder, GenerationConfig, GenResult, GenStats, Streamer, generate, pick_next
from .kv import EXACT_ROLLBACK, LMSession, target_cpu_config
from .policies import AdaptiveDraft, FixedDraft, TreeCfg
from .sampling import SamplingCfg, pick, recursive_reject, sample, softmax, warp
from .text import load_tokenizer


@dataclass
class _Node:
    token: int  # full-vocabulary id
    parent: int  # index into the node list, −1 = the pending token x
    depth: int  # 1 = a child of x
    score: float  # product of draft probabilities on the path
    feat: np.ndarray  # [H] the parent's f̂: this node's head input if it is expanded
    slot: int = -1  # head cache slot once expanded


# ONNX-only artifacts carry no measured costs: a flat verify curve and this head/target cost ratio.
UNMEASURED_CURVE, UNMEASURED_HEAD_RATIO = {"1": 1.0, "64": 1.0}, 0.1


@dataclass(frozen=True)
class CostModel:
    """Measured target call time for n positions (`verify_ms` of the manifest) and a head call's cost."""
    n: np.ndarray  # [M] positions measured, ascending
    ms: np.ndarray  # [M] median ms per call
    head_ms: float  # one head call on one token

    @staticmethod
    def of(manifest: EagleManifest) -> CostModel:
        n, ms = curve_points(manifest.verify_ms or UNMEASURED_CURVE)
        c = manifest.defaults.head_cost_ratio
        return CostModel(n, ms, (UNMEASURED_HEAD_RATIO if c is None else c) * float(np.interp(1, n, ms)))

    def target_ms(self, n: np.ndarray | int) -> np.ndarray:
        """Interpolated; flat past the last measured n."""
        return np.interp(n, self.n, self.ms)


class EaglePipeline:
    def __init__(self, root: Path, manifest: EagleManifest, backend: str, device: str = "CPU",
                 threads: int | None = None):
        self.manifest = manifest
        self.tokenizer = load_tokenizer(root / manifest.tokenizer.file)
        self.target = LMSession(root, manifest.target, backend, device, threads, compact_after=EXACT_ROLLBACK,
                                cpu_config=target_cpu_config(manifest))
        self.head = LMSession(root, manifest.head, backend, device, threads)
        self.cost = CostModel.of(manifest)

    def generate(self, prompt: str | list[str], config: GenerationConfig | None = None, streamer: Streamer | None = None,
                 **overrides) -> GenResult:
        """Complete `prompt` (or each of a list); `config` and keyword overrides are GenerationConfig
        fields; draft=FixedDraft(k) (a chain of k; 0 = the target alone), TreeCfg(...) or "tree" (the
        artifact's tree settings); default: the artifact's (a chain of 2 from the default recipe)."""
        tok = self.manifest.tokenizer
        return generate(self.tokenizer, tok.eos_ids, tok.max_context, prompt, config, streamer, overrides,
                        self._decoder)

    def _decoder(self, cfg: GenerationConfig, rng: np.random.Generator, stats: GenStats) -> Decoder:
        shape = self._tree(cfg.draft)
        sampling, target, head = cfg.sampling, self.target, self.head
        last: dict = {}  # the head's last output row (logits, hidden_out)

        def start(ids: list[int]) -> int:
            target.reset(), head.reset()
            if shape is None:
                return pick_next(target, ids, sampling, rng)
            res = target.run(ids, logits_from=-1)  # logits [1, V], hidden [P, H]
            target.commit(len(ids))
            x = pick(res["logits"][-1], sampling, rng)
            last.update(update_head(head, ids[1:] + [x], res["hidden"]))
            return x

        def step(x: int, remaining: int) -> list[int]:
            if shape is None:  # the target alone
                return [pick_next(target, [x], sampling, rng)]
            new, row = eagle_round(target, head, x, last, shape, self.cost, sampling, rng, stats)
            last.update(row)
            return new

        return Decoder(start, step, (target, head))

    def _tree(self, draft) -> TreeCfg | None:
        """The draft setting as a tree (a chain of k = topk 1, k tokens; None = the target alone)."""
        d = self.manifest.defaults
        if draft is None:
            draft = FixedDraft(d.num_draft_tokens)
        if draft == "tree":
            draft = TreeCfg(d.tree_depth, d.tree_topk, d.tree_max_tokens, d.tree_dynamic)
        if isinstance(draft, AdaptiveDraft):
            raise InputError("AdaptiveDraft is for speculative artifacts; EAGLE sizes its tree itself "
                             "(draft=TreeCfg(...) or 'tree')")
        if isinstance(draft, FixedDraft):
            return TreeCfg(depth=draft.k, topk=1, max_tokens=draft.k, dynamic=False) if draft.k else None
        return draft


def eagle_round(target: LMSession, head: LMSession, x: int, last: dict, shape: TreeCfg, cost: CostModel,
                cfg: SamplingCfg, rng, stats: GenStats) -> tuple[list[int], dict]:
    """Draft a tree after x, verify it, accept a path. Returns (accepted tokens + next token, head's last row)."""
    nodes, head_ms = draft_tree(head, last, shape, cost)
    nodes = select_nodes(nodes, shape, head_ms, cost)
    parents = [-1] + [0 if n.parent < 0 else n.parent + 1 for n in nodes]  # verify rows: x, then nodes
    res = target.run([x, *(n.token for n in nodes)], parents)  # logits [1+N, V], hidden [1+N, H]
    path, tok = accept_path(nodes, res["logits"], cfg, rng)
    rows = [0, *(i + 1 for i in path)]
    target.commit(rows)
    accepted = [nodes[i].token for i in path]
    stats.record_round(len(nodes), len(path))
    return [*accepted, tok], update_head(head, [*accepted, tok], res["hidden"][rows])


def draft_tree(head: LMSession, last: dict, shape: TreeCfg, cost: CostModel) -> tuple[list[_Node], float]:
    """All candidate nodes, breadth-first; per depth the `topk` best new nodes are expanded.
    Returns (nodes, the modelled ms of this round's head calls)."""
    nodes = _children(head, -1, 1, 1.0, last["logits"], last["hidden_out"], shape.topk)
    frontier, spent = list(range(len(nodes))), 0.0
    for depth in range(2, shape.depth + 1):
        expand = sorted(frontier, key=lambda i: -nodes[i].score)[: shape.topk]
        call_ms = cost.head_ms * float(cost.target_ms(len(expand)) / cost.target_ms(1))
        if shape.dynamic and not _worth_deepening(nodes, expand, spent, call_ms, shape.max_tokens, cost):
            break
        spent += call_ms
        res = head.run([nodes[i].token for i in expand], parents=[-1] * len(expand),
                       visible=[_ancestor_slots(nodes, i) for i in expand], base_depth=depth - 2,
                       hidden=np.stack([nodes[i].feat for i in expand])[None])
        head.commit(0, compact=False)  # draft slots stay masked; visible to their descendants only
        frontier = []
        for j, i in enumerate(expand):
            nodes[i].slot = int(head.last_slots[j])
            kids = _children(head, i, depth, nodes[i].score, res["logits"][j], res["hidden_out"][j], shape.topk)
            frontier += range(len(nodes), len(nodes) + len(kids))
            nodes += kids
    return nodes, spent


def best_size(scores: np.ndarray, head_ms: float, max_tokens: int, cost: CostModel) -> tuple[int, float]:
    """scores sorted high → low: the n ≤ max_tokens maximising (1 + Σ top-n) / (target_ms(n + 1) + head_ms)
    → (n, that expected tokens per ms)."""
    s = scores[:max_tokens]
    rate = (1.0 + np.cumsum(s)) / (cost.target_ms(np.arange(2, len(s) + 2)) + head_ms)
    i = int(np.argmax(rate))
    return i + 1, float(rate[i])


def _worth_deepening(nodes: list[_Node], expand: list[int], spent: float, call_ms: float, max_tokens: int,
                     cost: CostModel) -> bool:
    """Could one more head call raise the round's expected tokens per ms? Optimistically each
    expanded node gains a child as likely as itself (a child's score is at most its parent's)."""
    scores = np.sort([n.score for n in nodes])[::-1]
    now = best_size(scores, spent, max_tokens, cost)[1]
    hoped = np.sort(np.concatenate([scores, [nodes[i].score for i in expand]]))[::-1]
    return best_size(hoped, spent + call_ms, max_tokens, cost)[1] > now


def _children(head: LMSession, parent: int, depth: int, score: float, logits: np.ndarray, feat: np.ndarray,
              k: int) -> list[_Node]:
    """The top-k draft tokens after a node (draft logits [V'], its f̂ [H])."""
    q = softmax(logits)  # [V']
    top = np.argpartition(-q, k - 1)[:k] if k < len(q) else np.arange(len(q))
    top = top[np.argsort(-q[top], kind="stable")]
    return [_Node(int(head.full_ids(int(c))), parent, depth, score * float(q[c]), feat) for c in top]


def _ancestor_slots(nodes: list[_Node], i: int) -> np.ndarray:
    out, p = [], nodes[i].parent
    while p >= 0:
        out.append(nodes[p].slot)
        p = nodes[p].parent
    return np.array(out, np.int64)


def select_nodes(nodes: list[_Node], shape: TreeCfg, head_ms: float, cost: CostModel) -> list[_Node]:
    """The n best-scored nodes (ancestors included), breadth-first, parents re-indexed into the result."""
    order = sorted(range(len(nodes)), key=lambda i: (-nodes[i].score, nodes[i].depth, i))
    n = min(shape.max_tokens, len(order))
    if shape.dynamic and n > 1:
        n = best_size(np.array([nodes[i].score for i in order]), head_ms, n, cost)[0]
    keep = set(order[:n])
    for i in order[:n]:  # ancestor closure (ties in score could break it)
        p = nodes[i].parent
        while p >= 0 and p not in keep:
            keep.add(p)
            p = nodes[p].parent
    kept = sorted(keep, key=lambda i: (nodes[i].depth, i))
    index = {old: new for new, old in enumerate(kept)}
    return [_Node(nodes[i].token, index.get(nodes[i].parent, -1), nodes[i].depth, nodes[i].score, nodes[i].feat)
            for i in kept]


def accept_path(nodes: list[_Node], logits: np.ndarray, cfg: SamplingCfg, rng) -> tuple[list[int], int]:
    """(accepted node indices root → leaf, the next token) from verify logits [1+N, V] (row 0 = x)."""
    children: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        children.setdefault(n.parent, []).append(i)
    path, cur = [], -1
    while True:
        row = logits[cur + 1]
        kids = sorted(children.get(cur, []), key=lambda i: -nodes[i].score)
        if cfg.greedy:
            tok = int(row.argmax())
            nxt = next((i for i in kids if nodes[i].token == tok), None)
            if nxt is None:
                return path, tok
        else:
            j, p = recursive_reject(warp(row, cfg), [nodes[i].token for i in kids], rng)
            if j is None:
                return path, sample(p, rng)
            nxt = kids[j]
        path.append(nxt)
        cur = nxt


def update_head(head: LMSession, tokens: list[int], feats: np.ndarray) -> dict:
    """Feed the head (f_j, x_{j+1}) for the target's newly committed positions → its last output row."""
    res = head.run(tokens, hidden=feats[None].astype(np.float32))
    head.commit(len(tokens))
    return {"logits": res["logits"][-1], "hidden_out": res["hidden_out"][-1]}
