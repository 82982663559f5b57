"""Artifact manifest: versioned pydantic schema (one base + a typed part per method), written as
`manifest.json`, read back with verification.

`read_manifest(dir)` checks the schema version, that every path stays inside the artifact dir
(no `..`, no absolute paths, no symlinks) and that every file's sha256 matches. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import IntegrityError, ManifestError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_M):
    name: str
    dtype: str  # numpy dtype name: int64, float32
    shape: list[int | str]  # str = dynamic axis name


class Graph(_M):
    name: str  # seg0, seg1, ...
    files: dict[str, str]  # backend → main file (openvino: .xml with its .bin beside it; onnxruntime: .onnx)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layers: tuple[int, int]  # encoder layers [start, end), 0-based
    exit_layer: int  # 1-based layer whose head classifies at the end of this segment
    precision: dict[str, str]  # backend → fp32 | fp16 | int8-weights | int4-weights | int8


class SweepPointM(_M):
    threshold: float
    accuracy: float
    accuracy_drop_pt: float
    expected_speedup: float
    exit_fractions: list[float]


class Calibration(_M):
    split: str
    samples: int
    backend: str
    accuracy_full: float
    max_accuracy_drop_pt: float  # the budget the rules were fitted to (against accuracy_full)
    segment_cost_ms: list[float]  # measured, batch 1, median per segment
    # budget_reference "fp32": fp32 full depth's validation accuracy, whose gap to accuracy_full was
    # taken off the recipe's budget
    accuracy_reference: float | None = None
    curve: list[SweepPointM]
    chosen: SweepPointM


class Candidate(_M):
    """One exit rule calibrated on validation (calibration.RuleFit): settings, results, frontier."""
    kind: Literal["entropy", "entropy_per_exit", "learned"]
    thresholds: list[float]  # one per exit (the global rule repeats its one number)
    weights: list[list[float]] | None = None  # learned: per exit 5 coefficients + bias
    accuracy_drop_pt: float  # in-sample on validation
    expected_speedup: float
    exit_fractions: list[float]
    cv_accuracy_drop_pt: float  # 5-fold cross-validated on validation: what the choice is made on
    cv_expected_speedup: float
    curve: list[dict[str, float]] = []  # per error price λ: cross-validated and in-sample results


class Policy(_M):
    """The calibrated default. `threshold` alone (kind entropy) is the rule of manifests written before
    per-exit thresholds; `thresholds` (one per exit) and `weights` (learned) are the newer rules."""
    kind: Literal["entropy", "learned"] = "entropy"
    threshold: float
    thresholds: list[float] | None = None
    weights: list[list[float]] | None = None
    calibration: Calibration | None = None
    candidates: list[Candidate] = []  # every rule calibrated, the chosen one included


class Tokenizer(_M):
    file: str  # tokenizer.json (tokenizers library)
    extra_files: list[str] = []
    max_length: int
    pad_id: int
    truncation: Literal["warn"] = "warn"  # longer texts are cut to max_length and a warning is issued


class Source(_M):
    model_id: str
    model_type: str
    model_sha256: str
    num_layers: int
    dataset: dict  # the recipe's dataset section: id, columns, labels, split sizes, seed
    dataset_sha256: str
    split: dict
    checkpoint: str
    training: dict


class ManifestBase(_M):
    """The fields every artifact's manifest has; per-method manifests add theirs."""
    schema_version: int = SCHEMA_VERSION
    created_utc: str
    weight_format: str
    versions: dict[str, str]
    parity: dict[str, float] = {}  # max |output − torch| per graph (and backend), measured at export
    files: dict[str, str] = Field(default_factory=dict)  # relative path → sha256, every file but this one

    def all_graphs(self) -> list:
        """Every graph entry (each has `name` and `files`: backend → file)."""
        raise NotImplementedError

    def referenced(self) -> list[str]:
        """Every file the runtime opens (each must have a sha256 in `files`)."""
        raise NotImplementedError


class EarlyExitManifest(ManifestBase):
    method: Literal["bert_exits"]
    exits: list[int]
    labels: list[str]
    quant_mode: str
    tokenizer: Tokenizer
    graphs: list[Graph]
    policy: Policy | None = None
    source: Source

    def all_graphs(self) -> list[Graph]:
        return list(self.graphs)

    def referenced(self) -> list[str]:
        return [self.tokenizer.file, *self.tokenizer.extra_files, *(f for g in self.graphs for f in g.files.values())]


class LMGraph(_M):
    """A causal-LM graph (target or draft) with its KV cache: explicit in ONNX, stateful in OpenVINO IR."""
    name: str  # target | draft | head
    files: dict[str, str]  # backend → file
    inputs: list[TensorSpec]  # the explicit-KV signature (ONNX); OpenVINO holds past/present as state
    outputs: list[TensorSpec]
    kv_cache: dict[str, Literal["stateful", "explicit"]]  # backend → how the graph holds its KV cache
    num_layers: int  # decoder layers in this graph
    source_layers: list[int]  # which layers of the source model they are
    kv_heads: int
    head_dim: int
    vocab_file: str | None = None  # .npy int64 [V']: full-vocabulary id of each output column (None = all)
    precision: dict[str, str]
    model_sha256: str  # of the weights the graph was built from
    params: int | None = None  # parameters of the graph's model, embeddings included (None: older artifacts)
    attention_dim: int | None = None  # query heads × head dim (the attention term of FLOPs per token)


class LMTokenizer(_M):
    file: str  # tokenizer.json (tokenizers library)
    extra_files: list[str] = []  # tokenizer_config.json, chat template, OpenVINO tokenizer/detokenizer IR
    openvino_tokenizer: str | None = None
    openvino_detokenizer: str | None = None
    sha256: str  # of tokenizer.json: draft and target must share it
    vocab_size: int
    eos_ids: list[int]
    max_context: int  # prompt + generated tokens


class LMManifest(ManifestBase):
    method: Literal["lm"]
    tokenizer: LMTokenizer
    model: LMGraph
    cpu_config: dict[str, str] = {}  # OpenVINO CPU settings on top of the runtime's (none: plugin defaults)
    source: dict  # model id, sha256

    def all_graphs(self) -> list[LMGraph]:
        return [self.model]

    def referenced(self) -> list[str]:
        return [self.tokenizer.file, *self.tokenizer.extra_files, *self.model.files.values(),
                *([self.model.vocab_file] if self.model.vocab_file else [])]


class SpeculativeDefaults(_M):
    """Generation defaults of a speculative artifact: the draft length (recipe) and the cost model the
    adaptive policy uses (measured at export on OpenVINO; None for ONNX-only artifacts)."""
    num_draft_tokens: int | Literal["adaptive"]
    draft_cost_ratio: float | None = None  # draft / target time of a one-token call
    verify_slope: float | None = None  # extra target time per verified token, in target calls


class SpeculativeManifest(ManifestBase):
    method: Literal["speculative"]
    tokenizer: LMTokenizer
    target: LMGraph
    draft: LMGraph
    defaults: SpeculativeDefaults
    verify_ms: dict[str, float] = {}  # target call time (ms, median) for n positions after a prompt, OpenVINO
    # OpenVINO CPU settings the target needs for exact greedy, checked at export / calibrate (runtime/costs.py);
    # None (older artifacts): not checked, so compressed weights run without dynamic quantization
    cpu_config: dict[str, str] | None = None
    source: dict  # target / draft ids, sha256s, draft training summary

    def all_graphs(self) -> list[LMGraph]:
        return [self.target, self.draft]

    def referenced(self) -> list[str]:
        graphs = [f for g in (self.target, self.draft) for f in g.files.values()]
        vocab = [g.vocab_file for g in (self.target, self.draft) if g.vocab_file]
        return [self.tokenizer.file, *self.tokenizer.extra_files, *graphs, *vocab]


class EagleDefaults(_M):
    """Generation defaults of an EAGLE artifact: a chain of `num_draft_tokens`, or (draft="tree") a tree
    of at most these sizes (recipe), and the head's measured cost ratio c (None for ONNX-only)."""
    num_draft_tokens: int
    tree_depth: int
    tree_topk: int
    tree_max_tokens: int
    tree_dynamic: bool = True
    head_cost_ratio: float | None = None


class EagleManifest(ManifestBase):
    """EAGLE: the target (logits + final-norm features, tree-verifiable) and a feature-level draft head."""
    method: Literal["eagle"]
    tokenizer: LMTokenizer
    target: LMGraph
    head: LMGraph
    defaults: EagleDefaults
    verify_ms: dict[str, float] = {}  # target call time (ms, median) for n positions after a prompt, OpenVINO
    # OpenVINO CPU settings the target needs for exact greedy, checked at export / calibrate (runtime/costs.py);
    # None (older artifacts): not checked, so compressed weights run without dynamic quantization
    cpu_config: dict[str, str] | None = None
    source: dict  # target sha256, head training summary

    def all_graphs(self) -> list[LMGraph]:
        return [self.target, self.head]

    def referenced(self) -> list[str]:
        graphs = [f for g in (self.target, self.head) for f in g.files.values()]
        vocab = [g.vocab_file for g in (self.target, self.head) if g.vocab_file]
        return [self.tokenizer.file, *self.tokenizer.extra_files, *graphs, *vocab]


class GraphSpec(_M):
    """A stateless graph (one call in, one result out) for both backends."""
    name: str
    files: dict[str, str]  # backend → file
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: dict[str, str]


class StepPredictorInfo(_M):
    counts: list[int]  # the step-count classes the predictor's probabilities are over, ascending
    margin: float  # default safety quantile: steps = smallest count c with P(enough at c) >= margin
    calibration: dict = {}  # how margin was chosen (split, converged fraction, mean steps)
    training: dict = {}


class StepControlInfo(_M):
    """The in-loop step policies' calibrated fields (InLoopStop / AdaptiveSkip / CombinedSteps keyword
    arguments), which of them steps="adaptive" means, and how they were calibrated."""
    stop: dict = {}
    skip: dict = {}
    combined: dict = {}
    default: Literal["stop", "skip", "combined"] = "stop"
    calibration: dict = {}  # split, target mean SSIM, each policy's curve and choice
    training: dict = {}  # the UNet sha256, scheduler, full steps and guidance it was calibrated for


class DiffusionManifest(ManifestBase):
    """StepSaver: text encoder + UNet step (+ step predictor); the sampler loop runs in numpy."""
    method: Literal["stepsaver"]
    quant_mode: str
    tokenizer: Tokenizer
    text_encoder: GraphSpec
    unet: GraphSpec
    predictor: GraphSpec | None = None
    step_predictor: StepPredictorInfo | None = None
    step_control: StepControlInfo | None = None
    image_size: int
    scheduler: dict  # train_timesteps, beta_schedule, prediction_type, default kind
    full_steps: int  # the reference schedule length (quality is measured against it)
    max_steps: int
    guidance_scale: float  # classifier-free guidance; 1.0 = conditional pass only
    source: dict  # UNet / predictor sha256 and training records, dataset attribution

    def all_graphs(self) -> list[GraphSpec]:
        return [g for g in (self.text_encoder, self.unet, self.predictor) if g is not None]

    def referenced(self) -> list[str]:
        return [self.tokenizer.file, *self.tokenizer.extra_files, *(f for g in self.all_graphs() for f in g.files.values())]


AnyManifest = Annotated[Union[EarlyExitManifest, LMManifest, SpeculativeManifest, EagleManifest, DiffusionManifest],
                        Field(discriminator="method")]
_ADAPTER = TypeAdapter(AnyManifest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def safe_path(root: Path, rel: str) -> Path:
    """`root/rel`, refusing absolute paths, `..`, and anything (or any symlink) that leaves `root`."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or "\\" in rel or ".." in p.parts or rel.startswith("~"):
        raise ManifestError(f"manifest path {rel!r} is not a plain relative path inside the artifact")
    full = root / p
    if full.is_symlink() or any(q.is_symlink() for q in full.parents if q != root and root in q.parents):
        raise ManifestError(f"manifest path {rel!r} is a symlink; artifacts hold plain files only")
    if not full.resolve().is_relative_to(root.resolve()):
        raise ManifestError(f"manifest path {rel!r} escapes the artifact dir")
    return full


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file below root except the manifest, keyed by POSIX relative path."""
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(root: Path, manifest):
    """Fill `files` with the sha256 of everything in `root` and write manifest.json."""
    m = manifest.model_copy(update={"files": hash_tree(root)})
    (root / MANIFEST).write_text(m.model_dump_json(indent=1))
    return m


def read_manifest(root: Path, verify: bool = True) -> ManifestBase:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{root} is not a dynexport artifact: {MANIFEST} is missing")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version {version!r} is not supported (this dynexport reads "
                            f"{SCHEMA_VERSION}); re-export the artifact with this version")
    try:
        m = _ADAPTER.validate_python(raw)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()[:5])
        raise ManifestError(f"{path} is malformed: {errs}") from None
    for rel in m.referenced():
        if rel not in m.files:
            raise ManifestError(f"{path}: {rel!r} is used but has no sha256 in `files`")
    if verify:
        for rel, digest in m.files.items():
            full = safe_path(root, rel)
            if not full.is_file():
                raise IntegrityError(f"{root}: file {rel!r} listed in the manifest is missing")
            if sha256_file(full) != digest:
                raise IntegrityError(f"{root}: file {rel!r} does not match its sha256 in the manifest "
                                     "(tampered or corrupted); re-export the artifact")
    else:
        for rel in m.files:
            safe_path(root, rel)
    return m
