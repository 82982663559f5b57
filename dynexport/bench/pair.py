"""The real-size pair benchmark (scripts/bench_speculative.py --pair qwen): Qwen2.5-Coder-1.5B target,
its 0.5B sibling and (when trained) an EAGLE head as drafts, against openvino_genai on the same pair.

Artifacts are exported once into exported_models/qwen/ (re-exported when the recipe changes). genai gets
optimum-cli exports of the same converted checkpoints, one fresh pipeline per configuration, prefix
caching off for its speculative (continuous-batching) pipelines so no configuration reuses another's
prompt KV. Rows run prompt by prompt, configurations interleaved (bench/lm.py), raw completion.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from .lm import OUT_ROOT

PAIR_OUT = OUT_ROOT / "qwen"
TARGET, DRAFT = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"
DRAFT_FORMAT = "int4"  # the 0.5B draft's weights in every row (cheapest per call; measured c below)
VOCAB_CUT = 32768  # the truncated-vocabulary draft row


def rss_mb() -> float:
    """Current resident set size (MB) of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_artifact(name: str, fields: dict) -> Path:
    """exported_models/qwen/<name>, exported from these recipe fields unless already made from them."""
    from dynexport import methods
    out, stamp = PAIR_OUT / name, json.dumps(fields, sort_keys=True)
    made = out / "dynexport-bench-recipe.json"
    if (out / "manifest.json").is_file() and made.is_file() and made.read_text() == stamp:
        return out
    method = fields.pop("method", "speculative")
    recipe = methods.get(method).load_recipe(None, fields)
    methods.export(method, recipe, out, overwrite=True, formats=("openvino",))
    made.write_text(stamp)
    return out


def speculative_artifact(precision: str, vocab: int = 0) -> Path:
    return ensure_artifact(f"spec-{precision}-d{DRAFT_FORMAT}" + (f"-v{vocab}" if vocab else ""), {
        "target": TARGET, "draft": DRAFT, "quantization.weight_format": precision,
        "draft_shape.weight_format": DRAFT_FORMAT, "draft_shape.vocab_size": vocab,
        "generation.num_draft_tokens": "adaptive"})


def eagle_artifact(precision: str, head: Path) -> Path | None:
    """The EAGLE artifact of a trained head (None when there is none), named by the head's hash so a
    retrained head is exported afresh."""
    from dynexport.manifest import sha256_file
    if not (head / "eagle.json").is_file():
        return None
    name = f"eagle-{precision}-{sha256_file(head / 'eagle.safetensors')[:12]}"
    return ensure_artifact(name, {"method": "eagle", "target": TARGET, "head": str(head),
                                                  "quantization.weight_format": precision})


def optimum_export(model: str, precision: str) -> Path:
    """optimum-cli's export of an embedded LM (the same converted checkpoint ours is made from)."""
    from dynexport.models.lm_sources import resolve_lm
    out = PAIR_OUT / "genai" / f"{model}-{precision}"
    if not (out / "openvino_model.xml").is_file():
        subprocess.run([str(Path(sys.executable).parent / "optimum-cli"), "export", "openvino", "--model",
                        str(resolve_lm(model)), "--task", "text-generation-with-past", "--weight-format", precision,
                        str(out)], check=True, capture_output=True)
    return out


def genai_pipeline(precision: str, draft: bool):
    """A fresh openvino_genai.LLMPipeline on the target (+ the 0.5B as draft_model), genai's own defaults."""
    import openvino_genai as og
    target = str(optimum_export(TARGET, precision))
    if not draft:
        return og.LLMPipeline(target, "CPU")
    sched = og.SchedulerConfig()
    sched.enable_prefix_caching = False
    return og.LLMPipeline(target, "CPU", scheduler_config=sched,
                          draft_model=og.draft_model(str(optimum_export(DRAFT, DRAFT_FORMAT)), "CPU"))


def decode_tok_s(runs: list[dict]) -> float:
    """Decode-only speed: tokens after the first over the time after the first token."""
    return sum(r["tokens"] - 1 for r in runs) / sum(r["wall_s"] - r["ttft_s"] for r in runs)


def ceiling(verify_ms: dict[str, float], k_max: int = 64) -> dict:
    """The best speed-up a perfect, free draft allows on this curve: max over k of (k+1) / t(k+1)/t(1)."""
    from dynexport.runtime.costs import relative_curve
    rel = relative_curve(verify_ms, k_max + 1)
    best = max(range(1, k_max + 1), key=lambda k: (k + 1) / rel[k])
    return {"speedup": (best + 1) / rel[best], "k": best}
