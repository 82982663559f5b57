"""Inference-compute strategies on HumanEval → benchmarks/strategies.json + benchmarks/strategies.png.

    python scripts/bench_strategies.py [--stages pool greedy judge score rebase wall report]
        [--models qwen2.5-coder-0.5b qwen2.5-coder-1.5b] [--problems 164] [--pool 16]

Generators: Qwen2.5-Coder-0.5B and -1.5B (lm artifacts, int8 weights), raw HumanEval completion, the
usual stop sequences, T = 0.7. Stages, each resumable (one JSON per problem under
~/.cache/dynexport/strategies/, skipped when present) with a progress bar:
- pool: 16 samples per problem and model, one prefill and one batch (runtime/strategies.sample_pool);
- greedy: one greedy completion per problem and model;
- inputs: 16 samples of test calls each generator writes itself (CodeT), for the signatures;
- judge: every candidate's behaviour signature (docstring examples + those inputs) and docstring-example
  pass rate, and (grading only, never choosing) its hidden tests, in the sandbox;
- score: the 1.5B's mean token log-prob of each 0.5B candidate (the outcome reward; for the 1.5B's own
  samples that is its self-reward);
- rebase: REBASE trees at budgets 4 and 16, T_b 0.1 and 0.2, on a fixed subset of problems;
- wall: measured wall time, side by side and interleaved per problem, of the 1.5B greedy and the 0.5B
  sampling at budgets 1, 2, 4 (+ the 1.5B scoring them) on a subset;
- restore: write back the records of `<out>.records.json.gz` missing from the cache (the report
  archives every record it read there);
- report: best-of-N, majority and weighted voting subsample each pool at budgets 1..16 (random
  subsets, averaged), pass@1 vs policy / total FLOPs, paired bootstrap CIs, REBASE vs voting on its
  subset, the summary keys of the issue.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "dynexport" / "strategies"
SMALL, LARGE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


def artifact(model: str, precision: str) -> Path:
    from dynexport.bench.pair import ensure_artifact
    return ensure_artifact(f"lm-{model}-{precision}", {"method": "lm", "model": model,
                                                      "quantization.weight_format": precision})


def run_dir(args, model: str) -> Path:
    return CACHE / f"{model}-{args.precision}-t{args.temperature}-n{args.pool}-max{args.max_new_tokens}"


def each(items, path_of, desc: str):
    """The items whose result file does not exist yet, with a progress bar (and ETA) over all of them."""
    todo = [i for i in items if not path_of(i).is_file()]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc)
    for i in todo:
        yield i
        bar.update()
    bar.close()


def save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def stage_pool(args, pipes, task, problems, ids, greedy: bool) -> None:
    from dynexport.runtime.strategies import SolveConfig, sample_pool
    cfg = SolveConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    kind = "greedy" if greedy else "pool"
    for model, pipe in pipes.items():
        out = run_dir(args, model) / kind
        for i in each(ids, lambda i, out=out: out / f"{i}.json", f"{kind} {model}"):
            t0 = time.perf_counter()
            cands, rows, comp = sample_pool(pipe, task, problems[i], 1 if greedy else args.pool, cfg,
                                            np.random.default_rng(1000 + i), greedy=greedy)
            save(out / f"{i}.json", {
                "task_id": problems[i]["task_id"], "prompt_tokens": comp.prefill_tokens + 1,
                "wall_s": time.perf_counter() - t0, "compute": comp.to_json(),
                "candidates": [{"text": c.text, "program": c.answer, "answered": c.answer is not None,
                                "tokens": len(r.tokens), "rewards": dict(c.rewards)} for c, r in zip(cands, rows)]})


def stage_inputs(args, pipes, problems, ids) -> None:
    """Test inputs each generator writes itself (CodeT): its voting keys run on them too."""
    from dynexport.runtime.codet import model_inputs
    for model, pipe in pipes.items():
        out = run_dir(args, model) / "inputs"
        for i in each(ids, lambda i, out=out: out / f"{i}.json", f"inputs {model}"):
            calls, comp = model_inputs(pipe, problems[i], args.input_samples, args.input_temperature,
                                       np.random.default_rng(3000 + i))
            save(out / f"{i}.json", {"calls": calls, "compute": comp.to_json()})


def stage_judge(args, models, problems, ids) -> None:
    """Signature (docstring examples + the model's own inputs), example pass rate and hidden-test
    result of every candidate (sandboxed); re-judged when the inputs changed."""
    from dynexport.runtime.tasks import HumanEvalTask
    for model in models:
        written = load_records(run_dir(args, model) / "inputs", len(problems))
        for kind in ("pool", "greedy"):
            d = run_dir(args, model) / kind
            for i in tqdm(ids, desc=f"judge {kind} {model}"):
                path = d / f"{i}.json"
                rec = json.loads(path.read_text()) if path.is_file() else None
                calls = written.get(i, {}).get("calls", [])
                if rec is None or (rec.get("inputs") == calls and all("passed" in c for c in rec["candidates"])):
                    continue
                task = HumanEvalTask(extra_inputs={problems[i]["task_id"]: calls})
                for c in rec["candidates"]:
                    if c["answered"]:
                        c["key"] = list(task.key(problems[i], c["program"]))
                        c["rewards"]["task"] = task.reward(problems[i], c["program"])
                        c["passed"] = task.grade(problems[i], c["program"])
                    else:
                        c.update(key=None, passed=False)
                        c["rewards"]["task"] = None
                rec["inputs"] = calls
                rec["key_flops"] = written.get(i, {}).get("compute", {}).get("flops", 0.0)
                save(path, rec)


def stage_score(args, models, pipes, task, problems, ids) -> None:
    """lm reward = the 1.5B's exp(mean token log-prob) of each candidate; the 1.5B's own: its self-reward."""
    import math

    from dynexport.runtime.strategies import SolveConfig, prompt_ids, score_texts
    cfg, large = SolveConfig(max_new_tokens=args.max_new_tokens), pipes[LARGE]
    for model in models:
        d = run_dir(args, model) / "pool"
        for i in tqdm(ids, desc=f"score {model}"):
            path = d / f"{i}.json"
            rec = json.loads(path.read_text()) if path.is_file() else None
            if rec is None or all("lm" in c["rewards"] for c in rec["candidates"]):
                continue
            if model == LARGE:
                means = [math.log(c["rewards"]["self"]) for c in rec["candidates"]]
                scored = [0] * len(means)
            else:
                ids = prompt_ids(large, task, problems[i], args.max_new_tokens)
                means, _ = score_texts(large, ids, [c["text"] for c in rec["candidates"]], cfg)
                scored = [len(large.tokenizer.encode(c["text"], add_special_tokens=False).ids) or 1
                          for c in rec["candidates"]]
            for c, m, n in zip(rec["candidates"], means, scored):
                task_r = c["rewards"].get("task")
                c["rewards"]["lm"] = math.exp(m)
                c["rewards"]["product"] = math.exp(m) * (1.0 if task_r is None else task_r)
                c["scored"] = n
            save(path, rec)


def rebase_subset(args, n_problems: int) -> list[int]:
    """A fixed subset spread evenly over the problems."""
    k = min(args.rebase_problems, n_problems)
    return [round(j * n_problems / k) for j in range(k)]


def stage_rebase(args, pipes, large, problems) -> None:
    """REBASE trees: node reward = the 1.5B's exp(mean log-prob) of the solution so far (for the 1.5B
    generator: its own), finished solutions aggregated by weighted voting (reward: lm)."""
    from dynexport.runtime.rebase import rebase
    from dynexport.runtime.strategies import SolveConfig, add_rewards
    from dynexport.runtime.tasks import HumanEvalTask
    subset = rebase_subset(args, len(problems))
    for model, pipe in pipes.items():
        rm = large if model != LARGE else None
        written = load_records(run_dir(args, model) / "inputs", len(problems))  # the pool's voting keys use them too
        task = HumanEvalTask(extra_inputs={problems[i]["task_id"]: r["calls"] for i, r in written.items()})
        for tb in args.rebase_tb:
            cfg = SolveConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                              rebase_temperature=tb, reward="lm")
            for b in args.rebase_budgets:
                out = run_dir(args, model) / f"rebase-b{b}-tb{tb}"
                for i in each(subset, lambda i, out=out: out / f"{i}.json", f"rebase {model} b={b} T_b={tb}"):
                    t0 = time.perf_counter()
                    cands, pol, rew = rebase(pipe, rm, task, problems[i], b, cfg, np.random.default_rng(2000 + i))
                    if rm is None:  # the 1.5B's own log-prob is its lm reward
                        cands = add_rewards(cands, task, problems[i], [np.log(c.rewards["self"]) for c in cands])
                    save(out / f"{i}.json", {
                        "task_id": problems[i]["task_id"], "wall_s": time.perf_counter() - t0,
                        "policy": pol.to_json(), "reward": rew.to_json(),
                        "key_flops": written.get(i, {}).get("compute", {}).get("flops", 0.0),
                        "candidates": [_judged(task, problems[i], c) for c in cands]})


def _judged(task, problem: dict, c) -> dict:
    ok = c.answer is not None
    return {"answered": ok, "key": list(task.key(problem, c.answer)) if ok else None,
            "passed": bool(ok and task.grade(problem, c.answer)), "rewards": dict(c.rewards), "text": c.text}


def stage_wall(args, pipes, task, problems) -> None:
    """Measured wall time per problem, configurations interleaved (order rotated per problem): the 1.5B
    greedy; the 0.5B sampling at budgets 1, 2, 4 in one batch, and 4 samples as separate generate()
    calls (what the shared prefix and the batch save); the 1.5B scoring the batched samples."""
    from dynexport.runtime.strategies import SolveConfig, prompt_ids, score_texts
    cfg = SolveConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    out = CACHE / f"wall-{args.precision}-max{args.max_new_tokens}"
    subset = rebase_subset(argparse.Namespace(rebase_problems=args.wall_problems), len(problems))
    configs = [("large greedy", LARGE, 1, True)] + [(f"small b={b}", SMALL, b, False) for b in (1, 2, 4)]
    configs.append(("small b=4 separate", SMALL, 4, None))
    for n, i in enumerate(each(subset, lambda i: out / f"{i}.json", "wall")):
        p, rec = problems[i], {}
        for name, model, b, greedy in configs[n % len(configs):] + configs[: n % len(configs)]:
            t0 = time.perf_counter()
            cands = _timed_run(pipes[model], task, p, b, greedy, cfg, i)
            rec[name] = time.perf_counter() - t0
            if greedy is False:
                t0 = time.perf_counter()
                score_texts(pipes[LARGE], prompt_ids(pipes[LARGE], task, p, cfg.max_new_tokens),
                            [c.text for c in cands], cfg)
                rec[name + " scoring"] = time.perf_counter() - t0
        save(out / f"{i}.json", rec)


def _timed_run(pipe, task, problem: dict, b: int, greedy: bool | None, cfg, seed: int):
    """b samples in one batch (greedy True: one greedy completion), or (greedy None) b separate generate() calls."""
    from dynexport.runtime.strategies import sample_pool
    if greedy is None:
        for j in range(b):
            pipe.generate(task.prompt(problem), max_new_tokens=cfg.max_new_tokens, do_sample=True,
                          temperature=cfg.temperature, seed=seed * 100 + j, stop_strings=task.stop_strings)
        return []
    return sample_pool(pipe, task, problem, b, cfg, np.random.default_rng(seed), greedy=greedy)[0]


def archive(args, out: Path) -> None:
    """Every cached record of this run (the models' run dirs and the wall times), gzipped JSON keyed by
    path under the cache: committed beside the JSON, so a machine that lost its cache can `restore`."""
    import gzip
    dirs = [run_dir(args, m) for m in args.models] + [CACHE / f"wall-{args.precision}-max{args.max_new_tokens}"]
    recs = {str(f.relative_to(CACHE)): json.loads(f.read_text()) for d in dirs if d.is_dir()
            for f in sorted(d.rglob("*.json"))}
    out.write_bytes(gzip.compress(json.dumps(recs, sort_keys=True).encode(), mtime=0))


def records_path(args) -> Path:
    return args.out.with_suffix(".records.json.gz")


def restore(path: Path) -> None:
    """Write back the archived records missing from the cache (present ones are kept)."""
    import gzip
    for rel, rec in json.loads(gzip.decompress(path.read_bytes())).items():
        if not (CACHE / rel).is_file():
            save(CACHE / rel, rec)


def load_records(d: Path, n: int) -> dict[int, dict]:
    return {i: json.loads((d / f"{i}.json").read_text()) for i in range(n) if (d / f"{i}.json").is_file()}


SETTINGS = [("majority", None)] + [(s, r) for s in ("best_of_n", "weighted") for r in ("self", "task", "lm", "product")]


def pooled_curves(args, pools: dict[int, dict], graph, reward_graph) -> dict:
    """setting name → budget → {pass, policy_flops, total_flops, no_answer, per_problem}: means over problems."""
    from dynexport.bench.strategies import expected_at_budget
    curves = {}
    for strategy, reward in SETTINGS:
        name = strategy if reward is None else f"{strategy}/{reward}"
        curves[name] = {}
        for b in args.budgets:
            per = [expected_at_budget(pools[i], strategy, b, reward or "self", graph, reward_graph, args.draws, seed=i)
                   for i in sorted(pools)]
            curves[name][b] = {k: float(np.mean([p[k] for p in per])) for k in per[0]} | {
                "per_problem": [p["pass"] for p in per]}
    return curves


def greedy_summary(greedy: dict[int, dict]) -> dict:
    per = [float(r["candidates"][0].get("passed", False)) for _, r in sorted(greedy.items())]
    return {"pass": float(np.mean(per)), "policy_flops": float(np.mean([r["compute"]["flops"] for r in greedy.values()])),
            "wall_s": float(np.mean([r["wall_s"] for r in greedy.values()])), "per_problem": per}


def rebase_results(args, model: str, pools_keys: list[int]) -> dict:
    """(budget, T_b) → pass on the REBASE subset and the weighted-voting (lm) pass of the pool there."""
    from dynexport.bench.strategies import as_candidates
    from dynexport.runtime.strategies import select
    out = {}
    for tb in args.rebase_tb:
        for b in args.rebase_budgets:
            recs = load_records(run_dir(args, model) / f"rebase-b{b}-tb{tb}", max(pools_keys) + 1)
            recs = {i: r for i, r in recs.items() if i in pools_keys}
            if not recs:
                continue
            per, flops, total = [], [], []
            for _, r in sorted(recs.items()):
                cands, keys = as_candidates(r)
                j = select("rebase", cands, keys, "lm")
                per.append(0.0 if j is None else float(r["candidates"][j]["passed"]))
                flops.append(r["policy"]["flops"] + r.get("key_flops", 0.0))
                total.append(flops[-1] + r["reward"]["flops"])  # + the 1.5B scoring every step
            out[f"b{b}-tb{tb}"] = {"budget": b, "tb": tb, "problems": sorted(recs), "pass": float(np.mean(per)),
                                   "policy_flops": float(np.mean(flops)), "total_flops": float(np.mean(total)),
                                   "wall_s": float(np.mean([r["wall_s"] for r in recs.values()])),
                                   "oracle": float(np.mean([any(c["passed"] for c in r["candidates"])
                                                            for r in recs.values()])), "per_problem": per}
    return out


def matched_setting(res: dict) -> dict:
    """The 0.5B's best setting at ≤ the 1.5B greedy's policy FLOPs, and the cheapest one that reaches its
    pass@1 (either may not exist)."""
    target = res[LARGE]["greedy"]
    opts = [{"setting": name, "budget": b, **v} for name, c in res[SMALL]["curves"].items() for b, v in c.items()]
    g = res[SMALL]["greedy"]
    opts.append({"setting": "greedy", "budget": 1, **g, "total_flops": g["policy_flops"]})
    within = [o for o in opts if o["policy_flops"] <= target["policy_flops"]]
    reaching = [o for o in opts if o["pass"] >= target["pass"]]
    return {"best_within_flops": max(within, key=lambda o: o["pass"]) if within else None,
            "cheapest_reaching": min(reaching, key=lambda o: o["policy_flops"]) if reaching else None}


def wall_records(args) -> list[dict]:
    return list(load_records(CACHE / f"wall-{args.precision}-max{args.max_new_tokens}", 164).values())


def reuse_saving(args) -> float | None:
    """Measured: 4 samples as separate generate() calls / the same 4 in one batch with one prefill."""
    recs = wall_records(args)
    if not recs or "small b=4 separate" not in recs[0]:
        return None
    return sum(r["small b=4 separate"] for r in recs) / sum(r["small b=4"] for r in recs)


def wall_ratio(args, setting: dict | None) -> float | None:
    """Measured: the 0.5B at this budget (+ the 1.5B's scoring when the reward needs it) / the 1.5B greedy."""
    measured = wall_ratios(args).get(setting["budget"]) if setting else None
    if measured is None:
        return None
    return measured["with_scoring" if setting["setting"].endswith(("/lm", "/product")) else "sampling"]


def wall_ratios(args) -> dict:
    """Measured, per budget of the wall stage: the 0.5B sampling b answers in one batch / the 1.5B greedy,
    alone (task or self reward) and with the 1.5B scoring them (lm or product reward)."""
    recs = wall_records(args)
    large = sum(r["large greedy"] for r in recs)
    return {b: {"sampling": sum(r[f"small b={b}"] for r in recs) / large,
                "with_scoring": sum(r[f"small b={b}"] + r[f"small b={b} scoring"] for r in recs) / large}
            for b in (1, 2, 4) if recs and f"small b={b}" in recs[0]}


def orderings(res: dict, budgets) -> dict:
    """Paired bootstrap CIs, per model and budget: weighted − majority and majority − best-of-N (reward
    lm), and REBASE − weighted voting on REBASE's subset."""
    from dynexport.bench.stats import paired_bootstrap
    out = {}
    for model, r in res.items():
        c = r["curves"]
        for b in budgets if c else ():
            if b == 1:
                continue
            out[f"{model} b={b} weighted−majority"] = paired_bootstrap(c["weighted/lm"][b]["per_problem"],
                                                                      c["majority"][b]["per_problem"])
            out[f"{model} b={b} majority−best_of_n"] = paired_bootstrap(c["majority"][b]["per_problem"],
                                                                       c["best_of_n/lm"][b]["per_problem"])
        order = sorted(r["pools"])
        for key, rb in r["rebase"].items():
            pool = [c["weighted/lm"][rb["budget"]]["per_problem"][order.index(i)] for i in rb["problems"]]
            out[f"{model} {key} rebase−weighted"] = paired_bootstrap(rb["per_problem"], pool)
    return out


def summarize(args, res: dict) -> dict:
    from dynexport.bench.stats import paired_bootstrap
    m, target = matched_setting(res), res[LARGE]["greedy"]
    best = m["best_within_flops"]
    chosen = best if best and best["pass"] >= target["pass"] else (m["cheapest_reaching"] or best)
    ratio = lambda k: chosen[k] / target["policy_flops"] if chosen else None
    budget = chosen["budget"] if chosen else None
    order = orderings(res, args.budgets)
    return {
        "small_matches_large": bool(best and best["pass"] >= target["pass"]),
        "setting": chosen and f"{chosen['setting']} ×{chosen['budget']}",
        "flops_ratio": ratio("policy_flops"), "total_flops_ratio": ratio("total_flops"),
        "wall_ratio": wall_ratio(args, chosen),
        "wall_ratio_by_budget": wall_ratios(args),
        "batched_prefix_reuse_wall_saving": reuse_saving(args),
        "large_greedy_pass": target["pass"], "small_greedy_pass": res[SMALL]["greedy"]["pass"],
        "setting_pass": chosen and chosen["pass"],
        "setting_vs_large_greedy": chosen and paired_bootstrap(chosen["per_problem"], target["per_problem"]),
        "pass_at_matched_budget": {name: c[budget]["pass"] for name, c in res[SMALL]["curves"].items()}
        if budget in args.budgets else None,
        "rebase_vs_weighted_voting_pt": {k: v for k, v in order.items() if "rebase" in k},
        "ordering": {k: v for k, v in order.items() if "rebase" not in k},
        "best_within_flops": best and {k: v for k, v in best.items() if k != "per_problem"},
        "problems": len(res[SMALL]["pools"]),
    }


def report(args, problems) -> dict:
    from dynexport.bench.env import environment, write_json
    from dynexport.manifest import read_manifest
    graphs = {m: read_manifest(artifact(m, args.precision), verify=False).model for m in args.models}
    recs = {}
    for model in args.models:
        pools = load_records(run_dir(args, model) / "pool", len(problems))
        pools = {i: r for i, r in pools.items() if all("passed" in c and "lm" in c["rewards"] for c in r["candidates"])}
        greedy = load_records(run_dir(args, model) / "greedy", len(problems))
        greedy = {i: r for i, r in greedy.items() if "passed" in r["candidates"][0]}
        recs[model] = (pools, greedy)
    # the problems every model's greedy run and every finished pool has: all comparisons are paired on them
    ids = set.intersection(*[set(g) for _, g in recs.values()], *[set(p) for p, _ in recs.values() if p])
    res = {}
    for model, (pools, greedy) in recs.items():
        pools, greedy = {i: pools[i] for i in sorted(ids) if i in pools}, {i: greedy[i] for i in sorted(ids)}
        if not greedy:
            continue
        res[model] = {"pools": pools, "greedy": greedy_summary(greedy),
                      "curves": pooled_curves(args, pools, graphs[model], graphs[LARGE]) if pools else {},
                      "rebase": rebase_results(args, model, sorted(pools) or [0]),
                      "oracle": {b: float(np.mean([any(c["passed"] for c in p["candidates"][:b]) for p in pools.values()]))
                                 for b in args.budgets} if pools else {}}
    summary = summarize(args, res) if SMALL in res and LARGE in res else {}
    payload = {"env": environment(ROOT), "args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
               "models": {m: {k: v for k, v in r.items() if k != "pools"} for m, r in res.items()}}
    write_json(args.out, payload)
    plot(res, args.out.with_suffix(".png"), wall_records(args))
    archive(args, records_path(args))
    return payload


def plot(res: dict, path: Path, wall: list[dict]) -> None:
    """Left: pass@1 vs policy FLOPs (pooled strategies, REBASE, greedy). Right: pass@1 vs measured wall
    time per problem (the wall stage's problems), where it was measured."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, aw) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {"majority": "tab:blue", "best_of_n/lm": "tab:orange", "weighted/lm": "tab:green",
              "weighted/product": "tab:red", "best_of_n/product": "tab:purple", "best_of_n/task": "tab:brown"}
    for model, r in res.items():
        style, short = ("-" if model == SMALL else "--"), model.split("-")[-1]
        for name, color in colors.items() if r["curves"] else ():  # a model with no pool yet: its greedy point only
            c = r["curves"][name]
            ax.plot([c[b]["policy_flops"] for b in c], [100 * c[b]["pass"] for b in c], style, marker="o", ms=3,
                    color=color, label=f"{short} {name}")
        for key, rb in r["rebase"].items():
            ax.scatter([rb["policy_flops"]], [100 * rb["pass"]], marker="D" if model == SMALL else "s", s=40,
                       color="tab:cyan" if "0.1" in key else "tab:olive", zorder=5, label=f"{short} REBASE {key}")
        g = r["greedy"]
        ax.scatter([g["policy_flops"]], [100 * g["pass"]], marker="*", s=150, color="k" if model == LARGE else "gray",
                   zorder=5, label=f"{short} greedy")
    ax.set(xscale="log", xlabel="policy FLOPs per problem", ylabel="pass@1 of the chosen answer (%)",
           title="HumanEval: strategies at budgets 1..16 (solid 0.5B, dashed 1.5B)")
    if wall and SMALL in res and LARGE in res and res[SMALL]["curves"]:
        mean = lambda k: float(np.mean([w[k] for w in wall]))
        aw.scatter([mean("large greedy")], [100 * res[LARGE]["greedy"]["pass"]], marker="*", s=150, color="k",
                   label="1.5B greedy")
        for name, scoring in (("best_of_n/task", False), ("best_of_n/product", True)):
            bs = [b for b in (1, 2, 4) if f"small b={b}" in wall[0] and b in res[SMALL]["curves"][name]]
            xs = [mean(f"small b={b}") + (mean(f"small b={b} scoring") if scoring else 0.0) for b in bs]
            aw.plot(xs, [100 * res[SMALL]["curves"][name][b]["pass"] for b in bs], marker="o",
                    color=colors[name], label=f"0.5B {name} (b = {bs})")
        aw.set(xlabel=f"measured wall time per problem, s ({len(wall)} problems, 2 cores)",
               ylabel="pass@1 (%)", title="the same settings against wall time")
        aw.legend(fontsize=7)
    for a in (ax, aw):
        a.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+",
                    default=["pool", "greedy", "inputs", "judge", "score", "rebase", "wall", "report"])
    ap.add_argument("--models", nargs="+", default=[SMALL, LARGE])
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--problems", type=int, default=164, help="the first N HumanEval problems")
    ap.add_argument("--pool", type=int, default=16)
    ap.add_argument("--budgets", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    ap.add_argument("--draws", type=int, default=64, help="random subsets per problem and budget")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--input-samples", type=int, default=16, help="samples of test inputs per problem (CodeT)")
    ap.add_argument("--input-temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--rebase-problems", type=int, default=40)
    ap.add_argument("--subset", action="store_true",
                    help="pool, greedy, inputs, judge and score only REBASE's subset of problems (the report then "
                         "covers that subset: give it its own --out)")
    ap.add_argument("--rebase-budgets", nargs="+", type=int, default=[4, 16])
    ap.add_argument("--rebase-tb", nargs="+", type=float, default=[0.1, 0.2])
    ap.add_argument("--wall-problems", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "strategies.json")
    args = ap.parse_args()
    from dynexport.runtime import load
    from dynexport.runtime.sandbox import check
    from dynexport.runtime.tasks import task_problems
    check()
    task, problems = task_problems("humaneval")
    problems = problems[: args.problems]
    ids = rebase_subset(args, len(problems)) if args.subset else list(range(len(problems)))
    needs_models = set(args.stages) & {"pool", "greedy", "inputs", "score", "rebase", "wall"}
    models = list(dict.fromkeys(args.models + ([LARGE] if set(args.stages) & {"score", "rebase", "wall"} else [])))
    pipes = {m: load(artifact(m, args.precision), "openvino") for m in models} if needs_models else {}
    gen = {m: pipes[m] for m in args.models if m in pipes}
    for stage in args.stages:
        if stage in ("pool", "greedy"):
            stage_pool(args, gen, task, problems, ids, greedy=stage == "greedy")
        elif stage == "inputs":
            stage_inputs(args, gen, problems, ids)
        elif stage == "judge":
            stage_judge(args, args.models, problems, ids)
        elif stage == "score":
            stage_score(args, args.models, pipes, task, problems, ids)
        elif stage == "rebase":
            stage_rebase(args, gen, pipes[LARGE], problems)
        elif stage == "wall":
            stage_wall(args, pipes, task, problems)
        elif stage == "restore":
            restore(records_path(args))
        elif stage == "report":
            s = report(args, problems)["summary"]
            print(json.dumps({k: v for k, v in s.items() if k not in ("ordering",)}, indent=1))
        else:
            raise SystemExit(f"unknown stage {stage!r}")


if __name__ == "__main__":
    main()
