"""Graph writing per method: torch modules (models/) → ONNX and stateful OpenVINO IR, parity, NNCF."""
