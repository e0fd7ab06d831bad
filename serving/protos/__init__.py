"""TF Serving's protocol messages (the subset the transformer uses) without TensorFlow: README.md."""
