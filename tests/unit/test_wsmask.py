"""The numpy masker gives wsproto's own masker's bytes, call by call."""

from __future__ import annotations

import random

import pytest

from speakflow._patches import wsmask as _wsmask

ORIGINAL = _wsmask.WSPROTO_MASKER  # wsproto's own, whatever a server installed since


@pytest.mark.parametrize("seed", range(20))
def test_same_bytes_as_wsproto_across_split_payloads(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(4)
    ours, theirs = _wsmask.NumpyXorMasker(key), ORIGINAL(key)
    for _ in range(6):  # a payload arriving in pieces of any length, empty ones too
        piece = rng.randbytes(
            rng.choice([0, 1, 2, 3, 5, 7, 511, 512, 4096, 16001, rng.randrange(70000)])
        )
        assert ours.process(piece) == theirs.process(bytearray(piece))


def test_masking_twice_restores_the_payload() -> None:
    payload = bytes(range(256)) * 63 + b"xyz"
    masked = _wsmask.NumpyXorMasker(b"\x01\x02\x03\x04").process(payload)
    assert masked != payload
    assert _wsmask.NumpyXorMasker(b"\x01\x02\x03\x04").process(masked) == payload
    assert isinstance(masked, bytearray)


def test_installed_for_the_wsproto_in_use() -> None:
    from wsproto import frame_protocol

    assert ORIGINAL is not _wsmask.NumpyXorMasker
    assert _wsmask.install()  # the locked wsproto is one the masker was checked against
    assert frame_protocol.XorMaskerSimple is _wsmask.NumpyXorMasker
