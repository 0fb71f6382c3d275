"""Fixtures shared by the solver's tests (tests/node/) and the training app's (tests/app/).

Layout: ``tests`` is a package (``tests/__init__.py``), so test modules import the shared
problems as ``from tests.problems import ...``; pytest puts the repository root on
``sys.path`` (the first folder above the package), and this file does so too, so that the
checkout's ``node``, ``models``, ``datamodules`` and ``framework`` are imported even without an
installation. App-only fixtures live in tests/app/conftest.py; this file imports only the standard
library and pytest, so that tests/node/ runs without the training stack.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def torchdiffeq():
    """The torchdiffeq package, for the parity tests. It is part of the ``dev`` extra, so a
    missing torchdiffeq fails these tests (naming the fix) rather than skipping them silently."""
    try:
        import torchdiffeq
    except ImportError as exc:
        pytest.fail(f"the torchdiffeq parity tests need torchdiffeq (pip install -e '.[dev]'): "
                    f"{exc}")
    return torchdiffeq
