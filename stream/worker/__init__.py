"""`sentistream worker`: the Faust app that scores the input topic in micro-batches.

Runs as one process per consumer-group member (or N under `--processes`). Loads Faust, aiokafka,
prometheus-client and the model's engine (ONNX Runtime, or torch for the PyTorch backend). Nothing
outside this package imports it.
"""
