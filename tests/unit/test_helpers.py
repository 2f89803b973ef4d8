"""The helpers the server and the tools share: one percentile, one ``KEY=VALUE`` parser."""

from __future__ import annotations

import numpy as np
import pytest

from speakflow.stats import percentile
from speakflow.tools.args import key_values


def test_percentile_is_numpys_linear_percentile() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 101):
        values = rng.exponential(0.2, n)
        for q in (0, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input is sorted first
    assert percentile([], 50) is None


def test_key_values() -> None:
    assert key_values(["A=1", "B=x=y", "C="], "--env") == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("A", "=1"):
        with pytest.raises(ValueError, match=f"--env wants KEY=VALUE, got '{bad}'"):
            key_values([bad], "--env")
