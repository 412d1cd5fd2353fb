"""G.711 tables are bit-exact with the reference coder (CPython 3.11 audioop) on every value."""

import warnings

import numpy as np
import pytest

from gateway.audio import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

ALL_PCM = np.arange(65536, dtype=np.uint16).view(np.int16).astype("<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_ulaw_encoder_matches_reference_for_all_65536_samples():
    assert g711.pcm16_to_ulaw(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)


def test_alaw_encoder_matches_reference_for_all_65536_samples():
    assert g711.pcm16_to_alaw(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


def test_ulaw_decoder_matches_reference_for_all_256_codes():
    assert g711.ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decoder_matches_reference_for_all_256_codes():
    assert g711.alaw_to_pcm16(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_encoder_accepts_int16_arrays_and_bytes_alike():
    x = (np.sin(np.arange(160) / 5) * 20000).astype(np.int16)
    assert g711.pcm16_to_ulaw(x) == g711.pcm16_to_ulaw(x.astype("<i2").tobytes())


def test_silence_code_decodes_to_zero():
    assert g711.ulaw_to_array(bytes([g711.ULAW_SILENCE]))[0] == 0
