"""Export-time tools (need torch): the release's models, checkpoint loading, the synthetic
asset pack and the ONNX exporter. The runtime never imports this package."""
