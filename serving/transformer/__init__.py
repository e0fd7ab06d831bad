"""The KServe transformer in front of the TF-Serving-protocol predictor.

Run it with ``python -m serving.transformer`` (see ``__main__``). Importing this package stays
cheap: KServe and TensorFlow are imported only by the modules that need them.
"""
