"""`sentistream deploy`: checks a bundle and writes the control topic that workers follow.

A short-lived command; loads aiokafka, fsspec and the model's ONNX engine for the smoke check,
never Faust (torch only to check a bundle that has no ONNX graph).
"""
