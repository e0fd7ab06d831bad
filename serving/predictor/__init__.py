"""One-machine predictor speaking TensorFlow Serving's protocol (placeholder docstring)."""
