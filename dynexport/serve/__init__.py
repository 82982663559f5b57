"""Serving artifacts on Ray Serve in OpenAI's wire format (the `[serve]` extra): protocol.py (request
bodies and limits), worker.py (one artifact's answers, no Ray / HTTP), app.py (the FastAPI app),
metrics.py (Prometheus), ray_app.py (deployments, start / stop). `dynexport serve` is the way in."""
