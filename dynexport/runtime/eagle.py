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

A chain of k tokens is the tree with topk = 1 and n = k. `num_draft_tokens=0` runs the target alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError
from ..manifest import EagleManifest
from .kv import LMSession
from .sampling import SamplingCfg, pick, recursive_reject, sample, softmax, warp
from .speculative import GenResult, GenStats, _Output, check_request, encode_prompt, finish


@dataclass(frozen=True)
class TreeCfg:
    depth: int = 5  # draft depth (head calls per round, counting the free first level)
    topk: int = 8  # children per expanded node, and nodes expanded per depth
    max_tokens: int = 32  # draft tokens verified per round at most
    dynamic: bool = True  # size each tree from the measured target cost (False: exactly max_tokens)

    def __post_init__(self):
        for name, lo, hi in (("depth", 1, 16), ("topk", 1, 64), ("max_tokens", 1, 256)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InputError(f"tree {name} must be an integer in {lo}..{hi}, got {v!r}")


@dataclass
class _Node:
    token: int  # full-vocabulary id
    parent: int  # index into the node list, −1 = the pending token x
    depth: int  # 1 = a child of x
    score: float  # product of draft probabilities on the path
    feat: np.ndarray  # [H] the parent's f̂: this node's head input if it is expanded
    slot: int = -1  # head cache slot once expanded


class EaglePipeline:
    def __init__(self, root: Path, manifest: EagleManifest, backend: str, device: str = "CPU",
                 threads: int | None = None):
        self.manifest = manifest
        self.tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer.file))
        self.target = LMSession(root, manifest.target, backend, device, threads)
        self.head = LMSession(root, manifest.head, backend, device, threads)
        self.eos = set(manifest.tokenizer.eos_ids)
        curve = manifest.verify_ms or {"1": 1.0, "64": 1.0}  # ONNX-only artifacts: no curve, cost flat
        self._cost_n = np.array(sorted(int(n) for n in curve), np.float64)
        self._cost_ms = np.array([curve[str(int(n))] for n in self._cost_n], np.float64)
        self._head_ms = float(manifest.defaults.get("head_cost_ratio", 0.1)) * float(self.target_ms(1))

    def encode(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def target_ms(self, n: np.ndarray | int) -> np.ndarray:
        """Measured target call time for n positions (interpolated; flat past the last measured n)."""
        return np.interp(n, self._cost_n, self._cost_ms)

    def generate(self, prompt: str, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, num_draft_tokens: int | None = None,
                 tree: TreeCfg | dict | None = None, ignore_eos: bool = False,
                 streamer: Callable[[str], None] | None = None) -> GenResult:
        """Generate up to `max_new_tokens` after `prompt`. num_draft_tokens=k: a chain of k (0 = the target
        alone); tree=TreeCfg or a dict of its fields ({} = the manifest's tree settings); neither: the
        manifest's default (a chain of 2 from `dynexport eagle`)."""
        cfg = SamplingCfg(do_sample, temperature if do_sample else 1.0, top_k, top_p)
        shape = self._tree_cfg(num_draft_tokens, tree)
        ids = self.encode(prompt)
        check_request(len(ids), max_new_tokens, self.manifest.tokenizer.max_context)
        rng = np.random.default_rng(seed)
        stats, out = GenStats(prompt_tokens=len(ids)), _Output(self.tokenizer, streamer)
        t0 = time.perf_counter()
        self.target.reset(), self.head.reset()
        res = self.target.run(ids)  # logits [P, V], hidden [P, H]
        self.target.commit(len(ids))
        x = pick(res["logits"][-1], cfg, rng)
        stats.ttft_s = time.perf_counter() - t0
        last = self._update_head(ids[1:] + [x], res["hidden"]) if shape else None
        while not out.push([x], self.eos, max_new_tokens, ignore_eos):
            if shape is None:  # the target alone
                res = self.target.run([x])
                self.target.commit(1)
                x = pick(res["logits"][-1], cfg, rng)
                continue
            new, last = self._round(x, last, shape, cfg, rng, stats)
            if out.push(new[:-1], self.eos, max_new_tokens, ignore_eos):
                break
            x = new[-1]
        return finish(out, stats, t0, self.target, self.head)

    def _round(self, x: int, last: dict, shape: TreeCfg, cfg: SamplingCfg, rng, stats: GenStats):
        """Draft a tree after x, verify it, accept a path. Returns (accepted tokens + next token, head's last row)."""
        nodes, head_ms = self._draft_tree(last, shape)
        nodes = self._select(nodes, shape, head_ms)
        parents = [-1] + [0 if n.parent < 0 else n.parent + 1 for n in nodes]  # verify rows: x, then nodes
        res = self.target.run([x, *(n.token for n in nodes)], parents)  # logits [1+N, V], hidden [1+N, H]
        path, tok = self._accept(nodes, res["logits"], cfg, rng)
        rows = [0, *(i + 1 for i in path)]
        self.target.commit(rows)
        accepted = [nodes[i].token for i in path]
        stats.drafted, stats.accepted = stats.drafted + len(nodes), stats.accepted + len(path)
        stats.draft_lengths.append(len(nodes))
        stats.accepted_lengths.append(len(path))
        return [*accepted, tok], self._update_head([*accepted, tok], res["hidden"][rows])

    def _draft_tree(self, last: dict, shape: TreeCfg) -> tuple[list[_Node], float]:
        """All candidate nodes, breadth-first; per depth the `topk` best new nodes are expanded.
        Returns (nodes, the modelled ms of this round's head calls)."""
        nodes = self._children(-1, 1, 1.0, last["logits"], last["hidden_out"], shape.topk)
        frontier, spent = list(range(len(nodes))), 0.0
        for depth in range(2, shape.depth + 1):
            expand = sorted(frontier, key=lambda i: -nodes[i].score)[: shape.topk]
            call_ms = self._head_ms * float(self.target_ms(len(expand)) / self.target_ms(1))
            if shape.dynamic and not self._worth_deepening(nodes, expand, spent, call_ms, shape.max_tokens):
                break
            spent += call_ms
            res = self.head.run([nodes[i].token for i in expand], parents=[-1] * len(expand),
                                visible=[self._ancestor_slots(nodes, i) for i in expand], base_depth=depth - 2,
                                hidden=np.stack([nodes[i].feat for i in expand])[None])
            self.head.commit(0, compact=False)  # draft slots stay masked; visible to their descendants only
            frontier = []
            for j, i in enumerate(expand):
                nodes[i].slot = int(self.head.last_slots[j])
                kids = self._children(i, depth, nodes[i].score, res["logits"][j], res["hidden_out"][j], shape.topk)
                frontier += range(len(nodes), len(nodes) + len(kids))
                nodes += kids
        return nodes, spent

    def _best_size(self, scores: np.ndarray, head_ms: float, max_tokens: int) -> tuple[int, float]:
        """scores sorted high → low: the n ≤ max_tokens maximising (1 + Σ top-n) / (target_ms(n + 1) + head_ms)
        → (n, that expected tokens per ms)."""
        s = scores[:max_tokens]
        rate = (1.0 + np.cumsum(s)) / (self.target_ms(np.arange(2, len(s) + 2)) + head_ms)
        i = int(np.argmax(rate))
        return i + 1, float(rate[i])

    def _worth_deepening(self, nodes: list[_Node], expand: list[int], spent: float, call_ms: float,
                         max_tokens: int) -> bool:
        """Could one more head call raise the round's expected tokens per ms? Optimistically each
        expanded node gains a child as likely as itself (a child's score is at most its parent's)."""
        scores = np.sort([n.score for n in nodes])[::-1]
        now = self._best_size(scores, spent, max_tokens)[1]
        hoped = np.sort(np.concatenate([scores, [nodes[i].score for i in expand]]))[::-1]
        return self._best_size(hoped, spent + call_ms, max_tokens)[1] > now

    def _children(self, parent: int, depth: int, score: float, logits: np.ndarray, feat: np.ndarray,
                  k: int) -> list[_Node]:
        """The top-k draft tokens after a node (draft logits [V'], its f̂ [H])."""
        q = softmax(logits)  # [V']
        top = np.argpartition(-q, k - 1)[:k] if k < len(q) else np.arange(len(q))
        top = top[np.argsort(-q[top], kind="stable")]
        return [_Node(int(self.head.full_ids(int(c))), parent, depth, score * float(q[c]), feat) for c in top]

    @staticmethod
    def _ancestor_slots(nodes: list[_Node], i: int) -> np.ndarray:
        out, p = [], nodes[i].parent
        while p >= 0:
            out.append(nodes[p].slot)
            p = nodes[p].parent
        return np.array(out, np.int64)

    def _select(self, nodes: list[_Node], shape: TreeCfg, head_ms: float) -> list[_Node]:
        """The n best-scored nodes (ancestors included), breadth-first, parents re-indexed into the result."""
        order = sorted(range(len(nodes)), key=lambda i: (-nodes[i].score, nodes[i].depth, i))
        n = min(shape.max_tokens, len(order))
        if shape.dynamic and n > 1:
            n = self._best_size(np.array([nodes[i].score for i in order]), head_ms, n)[0]
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

    @staticmethod
    def _accept(nodes: list[_Node], logits: np.ndarray, cfg: SamplingCfg, rng) -> tuple[list[int], int]:
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

    def _update_head(self, tokens: list[int], feats: np.ndarray) -> dict:
        """Feed the head (f_j, x_{j+1}) for the target's newly committed positions → its last output row."""
        res = self.head.run(tokens, hidden=feats[None].astype(np.float32))
        self.head.commit(len(tokens))
        return {"logits": res["logits"][-1], "hidden_out": res["hidden_out"][-1]}

    def _tree_cfg(self, k: int | None, tree: TreeCfg | dict | None) -> TreeCfg | None:
        if k is None and tree is None:
            k = self.manifest.defaults.get("num_draft_tokens")  # the export's default: a chain
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 16:
                raise InputError(f"num_draft_tokens must be an integer in 0..16, got {k!r}")
            if tree is not None:
                raise InputError("pass num_draft_tokens (a chain) or tree, not both")
            return TreeCfg(depth=k, topk=1, max_tokens=k, dynamic=False) if k else None
        if isinstance(tree, TreeCfg):
            return tree
        d = self.manifest.defaults
        base = {"depth": int(d.get("tree_depth", 5)), "topk": int(d.get("tree_topk", 8)),
                "max_tokens": int(d.get("tree_max_tokens", 32))}
        if tree is not None and not isinstance(tree, dict):
            raise InputError(f"tree must be a TreeCfg or a dict of its fields, got {type(tree).__name__}")
        unknown = set(tree or {}) - {"depth", "topk", "max_tokens", "dynamic"}
        if unknown:
            raise InputError(f"unknown tree settings {sorted(unknown)}; use depth, topk, max_tokens, dynamic")
        return TreeCfg(**(base | (tree or {})))
