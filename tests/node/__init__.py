"""Tests of the solver package `node`: they need torch, scipy, tqdm, torchdiffeq and pytest only
(no training stack)."""
