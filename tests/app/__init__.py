"""Tests of the training app (models/, datamodules/, framework/, configs/, train.py, plot.py)."""
