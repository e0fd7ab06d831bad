"""Serving: everything on the wire (KServe transformer, one-machine predictor, codecs, rollout)."""
