"""Write an explicit-KV torch module (a `KVLlama` target/draft, an EAGLE head) as graphs: OpenVINO IR
made stateful, and ONNX with explicit past/present.

A module follows one protocol: `io_names()` → (input names, output names), where KV inputs are
`past_*` and KV outputs `present_*`; `example(batch, t, p)` → example args; `cfg` (kv_heads,
head_dim, hidden); `head` (the output projection [V', H]). Every other input is one of
input_ids / position_ids [B, T] int64, attention_mask [B, 1, T, P+T] float32, hidden [B, T, H] float32,
logits_index [N] int64 (the positions whose logits are computed: `KVLlama.sliced()`).
- OpenVINO: torch.export → ov.convert_model (keeps the SDPA op) → optimum-intel's make_stateful
  (beam_idx gather + ReadValue/Assign), so the CPU plugin fuses RoPE and attention-with-KV-cache
  (measured ≈ 2.5x faster per decode step than the same graph with explicit past inputs);
- ONNX: the dynamo exporter, explicit past/present, for onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..manifest import TensorSpec
from .common import export_onnx
from .quantize import compress_graph, compress_weights, precision_label

AXES = {"input_ids": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 2: "seq", 3: "total"}, "hidden": {0: "batch", 1: "seq"},
        "logits_index": {0: "logits"}}


def split_names(module) -> tuple[list[str], list[str], list[str], list[str]]:
    """(non-KV inputs, KV inputs, non-KV outputs, KV outputs)."""
    ins, outs = module.io_names()
    return ([n for n in ins if not n.startswith("past_")], [n for n in ins if n.startswith("past_")],
            [n for n in outs if not n.startswith("present_")], [n for n in outs if n.startswith("present_")])


def tensor_specs(module) -> tuple[list[TensorSpec], list[TensorSpec]]:
    c = module.cfg
    x_in, kv_in, x_out, kv_out = split_names(module)
    kv = ["batch", c.kv_heads, "past", c.head_dim]
    rows = "logits" if "logits_index" in x_in else "seq"
    shapes = {"logits_index": ("int64", ["logits"]),
              "input_ids": ("int64", ["batch", "seq"]), "position_ids": ("int64", ["batch", "seq"]),
              "attention_mask": ("float32", ["batch", 1, "seq", "past+seq"]),
              "hidden": ("float32", ["batch", "seq", c.hidden]), "hidden_out": ("float32", ["batch", "seq", c.hidden]),
              "logits": ("float32", ["batch", rows, int(module.head.shape[0])])}
    spec = lambda n: TensorSpec(name=n, dtype=shapes[n][0], shape=shapes[n][1])
    inputs = [*map(spec, x_in), *(TensorSpec(name=n, dtype="float32", shape=kv) for n in kv_in)]
    outputs = [*map(spec, x_out),
               *(TensorSpec(name=n, dtype="float32", shape=[*kv[:2], "past+seq", kv[3]]) for n in kv_out)]
    return inputs, outputs


def export_shapes(module) -> tuple:
    """torch.export dynamic_shapes for forward(*non-KV inputs, *past)."""
    x_in, kv_in, _, _ = split_names(module)
    dims: dict[str, torch.export.Dim] = {}
    dim = lambda n: dims.setdefault(n, torch.export.Dim(n, min=0 if n == "past" else 1))
    return (*({a: dim(n) for a, n in AXES[name].items()} for name in x_in),
            tuple({0: dim("batch"), 2: dim("past")} for _ in kv_in))


def write_openvino(module, xml: Path, weight_format: str) -> None:
    """torch.export → OpenVINO model → stateful (KV in ReadValue/Assign, beam_idx gather) → weights
    compressed in memory (int8 / int4) → IR: the fp32 graph is never written."""
    import openvino as ov
    from optimum.exporters.openvino.stateful import fuse_cache_reorder, make_stateful

    ins, outs = module.io_names()
    x_in, kv_in, _, kv_out = split_names(module)
    with torch.no_grad():
        ep = torch.export.export(module.eval(), module.example(), dynamic_shapes=export_shapes(module))
    model = ov.convert_model(ep)
    for port, name in zip(model.inputs, ins):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, outs):
        port.get_tensor().set_names({name})
    not_kv = [model.input(n) for n in x_in]
    fuse_cache_reorder(model, not_kv, kv_in, 0)
    make_stateful(model, not_kv, kv_in, kv_out, 0)
    model = compress_weights(model, weight_format)
    ov.save_model(model, str(xml), compress_to_fp16=weight_format == "fp16")


def write_onnx(module, path: Path) -> None:
    ins, outs = module.io_names()
    export_onnx(module, module.example(), path, ins, outs, shapes=export_shapes(module))


def write_kv_graphs(module, name: str, tmp: Path, weight_format: str, formats: tuple[str, ...]):
    """Write `name`.xml (stateful) and/or `name`.onnx (explicit), weights compressed to `weight_format`
    → (backend → file, backend → KV kind, backend → precision label)."""
    files, kv, precision = {}, {}, {}
    if "openvino" in formats:
        write_openvino(module, tmp / f"{name}.xml", weight_format)
        files["openvino"], kv["openvino"] = f"{name}.xml", "stateful"
        precision["openvino"] = precision_label(weight_format, "none", "openvino")
    if "onnxruntime" in formats:
        write_onnx(module, tmp / f"{name}.onnx")
        files["onnxruntime"], kv["onnxruntime"] = f"{name}.onnx", "explicit"
        precision["onnxruntime"] = compress_graph(tmp / f"{name}.onnx", "onnxruntime", weight_format, "none")
    return files, kv, precision
