"""One thin wrapper over a compiled graph for both backends: `graph(**inputs) -> {name: array}`.

OpenVINO graphs compile with f32 inference precision (the CPU plugin would otherwise pick bf16 on
CPUs that have it, changing results) and a latency hint; ONNX Runtime uses the CPU provider. A graph
the backend refuses to read, compile or run is a `GraphError` naming the file, never the backend's
own exception type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DynexportError, GraphError, InputError, brief

BACKENDS = ("openvino", "onnxruntime")


class Graph:
    def __init__(self, path: Path, backend: str, device: str = "CPU", threads: int | None = None,
                 ov_config: dict | None = None):
        if backend not in BACKENDS:
            raise InputError(f"backend {backend!r} is not supported; use one of {', '.join(BACKENDS)}")
        self.backend, self.path = backend, path
        if backend == "openvino":
            import openvino as ov
            core = ov.Core()
            if device not in core.available_devices and device != "AUTO":
                raise InputError(f"OpenVINO device {device!r} is not available here "
                                 f"(available: {', '.join(core.available_devices)})")
            config = {"PERFORMANCE_HINT": "LATENCY"}
            if device == "CPU":
                config["INFERENCE_PRECISION_HINT"] = "f32"
                if threads:
                    config["INFERENCE_NUM_THREADS"] = int(threads)
            config.update(ov_config or {})
            self._compiled = _guard(path, "compile", lambda: core.compile_model(str(path), device, config))
            self._request = self._compiled.create_infer_request()
            self.output_names = [o.get_any_name() for o in self._compiled.outputs]
            self.input_names = [i.get_any_name() for i in self._compiled.inputs]
        else:
            import onnxruntime as ort
            if device != "CPU":
                raise InputError(f"the onnxruntime backend runs on CPU only, not {device!r}")
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = int(threads)
            self._session = _guard(path, "load", lambda: ort.InferenceSession(str(path), opts,
                                                                           providers=["CPUExecutionProvider"]))
            self.output_names = [o.name for o in self._session.get_outputs()]
            self.input_names = [i.name for i in self._session.get_inputs()]

    def reset_state(self) -> None:
        """Clear a stateful OpenVINO graph's variables (its KV cache)."""
        self._request.reset_state()

    def map_states(self, fn) -> None:
        """Replace each OpenVINO state variable's value v with fn(v) (numpy in, numpy out)."""
        import openvino as ov
        for state in self._request.query_state():
            state.state = ov.Tensor(fn(state.state.data))

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        if self.backend == "openvino":
            res = _guard(self.path, "run", lambda: self._request.infer(inputs))
            return {name: res[i] for i, name in enumerate(self.output_names)}
        return dict(zip(self.output_names, _guard(self.path, "run", lambda: self._session.run(None, inputs))))


def _guard(path: Path, what: str, fn):
    """fn() with the backend's exceptions (RuntimeError from OpenVINO, onnxruntime's own types) as a GraphError."""
    try:
        return fn()
    except DynexportError:
        raise
    except Exception as e:  # the backends raise their own types, not only RuntimeError
        name = f"{path.name} (+ {path.with_suffix('.bin').name})" if path.suffix == ".xml" else path.name
        raise GraphError(f"{path.parent.name}/{name}: the backend cannot {what} this graph "
                         f"({type(e).__name__}: {brief(e)})") from e

