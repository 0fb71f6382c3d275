"""The training framework behind ``train.py`` and ``plot.py`` (Lightning + Hydra)."""
