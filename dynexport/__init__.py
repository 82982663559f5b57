"""dynexport: export models as segmented OpenVINO / ONNX graphs and run them with dynamic execution."""
