"""The streaming resampler: chunked == one-shot for any chunking, clean audio, small delay."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio.resample import StreamResampler, resample_once

PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]


def _chunked(x: np.ndarray, rate_in: int, rate_out: int, sizes: list[int]) -> np.ndarray:
    r = StreamResampler(rate_in, rate_out)
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(r.process(x[i : i + n]))
        i, k = i + n, k + 1
    return np.concatenate(out) if out else np.zeros(0, np.int16)


@settings(max_examples=60, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, 3000),
    sizes=st.lists(st.integers(1, 800), min_size=1, max_size=12),
)
def test_chunked_output_equals_one_shot_for_any_chunking(pair, seed, length, sizes):
    x = (np.random.default_rng(seed).standard_normal(length) * 8000).clip(-32768, 32767).astype(np.int16)
    assert np.array_equal(_chunked(x, *pair, sizes), resample_once(x, *pair))


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_output_length_follows_the_rate_ratio(rate_in, rate_out):
    x = np.zeros(rate_in, np.int16)  # one second
    y = _chunked(x, rate_in, rate_out, [rate_in // 50])  # 20 ms frames
    assert abs(len(y) - rate_out) <= 1


def _level_db(y: np.ndarray, rate: int, freq: float) -> float:
    w = np.hanning(len(y))
    spectrum = np.abs(np.fft.rfft(y * w)) / (w.sum() / 2) / 32768
    k = int(round(freq * len(y) / rate))
    return 20 * np.log10(spectrum[max(k - 3, 0) : k + 4].max() + 1e-12)


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.mark.parametrize("freq", [4600, 5000, 7000, 9000, 11000])
def test_downsampling_24k_to_8k_suppresses_aliases_by_80_db(freq):
    y = resample_once(_tone(freq, 24000), 24000, 8000)[400:]
    alias = abs(((freq + 4000) % 8000) - 4000)
    reference = _level_db(resample_once(_tone(1000, 24000), 24000, 8000)[400:], 8000, 1000)
    assert _level_db(y, 8000, alias) - reference <= -80


@pytest.mark.parametrize("freq", [300, 1000, 3400])
def test_upsampling_8k_to_24k_keeps_the_voice_band_and_suppresses_images(freq):
    y = resample_once(_tone(freq, 8000), 8000, 24000)[1200:]
    passband = _level_db(y, 24000, freq)
    assert passband > -6.0 - 0.6  # input tone is -6 dBFS; flat within ~0.5 dB to 3.4 kHz
    for image in (8000 - freq, 8000 + freq):
        assert _level_db(y, 24000, image) - passband <= -80


def test_16k_to_24k_suppresses_images_above_8k():
    y = resample_once(_tone(7000, 16000), 16000, 24000)[1200:]
    assert _level_db(y, 24000, 9000) - _level_db(y, 24000, 7000) <= -80


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_added_delay_is_at_most_5_ms(rate_in, rate_out):
    r = StreamResampler(rate_in, rate_out)
    assert r.delay_seconds <= 0.005
    # and the impulse really comes out within that delay (peak of the response)
    x = np.zeros(rate_in // 10, np.int16)
    x[0] = 20000
    y = r.process(x)
    assert np.argmax(np.abs(y)) / rate_out <= 0.005


def test_unsupported_rates_are_refused():
    with pytest.raises(ValueError):
        StreamResampler(44100, 8000)
