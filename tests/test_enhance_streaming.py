"""Streaming Enhancer: equals the offline model, keeps streams apart, resets reused slots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mediaserver.enhance.model import enhance_offline
from mediaserver.enhance.streaming import Enhancer
from test_enhance_common import band_model, constant_mask_model, random_model


def _noise(rows: int, samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((rows, samples))).astype(np.float32)


def _stream(enh: Enhancer, slots: list[int], x: np.ndarray, chunk: int, lim=None) -> np.ndarray:
    return np.concatenate(
        [enh.process(slots, x[:, i : i + chunk], lim) for i in range(0, x.shape[1], chunk)], axis=1
    )


@pytest.mark.parametrize("arch", ["gru", "band"])
@pytest.mark.parametrize("chunk", [480, 960, 4800])
def test_streaming_equals_offline(chunk: int, arch: str) -> None:
    model = random_model() if arch == "gru" else band_model(channels=8, time_hidden=8)
    enh = Enhancer(model, capacity=2)  # 3 streams: forces one capacity doubling
    slots = [enh.allocate() for _ in range(3)]
    x = _noise(3, 48000)
    lim = np.array([100.0, 6.0, 20.0], dtype=np.float32)
    y = _stream(enh, slots, x, chunk, lim)
    with torch.no_grad():
        ref = enhance_offline(model, torch.from_numpy(x), 48000, torch.from_numpy(lim)).numpy()
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-4
    assert enh.capacity == 4


def test_latency_is_one_hop() -> None:
    enh = Enhancer(constant_mask_model(1.0))
    slot = enh.allocate()
    x = _noise(1, 9600)
    y = _stream(enh, [slot], x, 960)
    assert Enhancer.latency == 480
    np.testing.assert_allclose(y[0, 480:], x[0, :-480], atol=1e-5)


def test_state_isolation_between_slots() -> None:
    enh = Enhancer(random_model(), capacity=4)
    a, b = enh.allocate(), enh.allocate()
    xa = _noise(1, 24000, seed=1)
    run1 = _stream(enh, [a, b], np.concatenate([xa, _noise(1, 24000, seed=2)]), 960)

    enh2 = Enhancer(random_model(), capacity=4)
    a2, b2 = enh2.allocate(), enh2.allocate()
    loud = 10.0 * _noise(1, 24000, seed=3)
    run2 = _stream(enh2, [a2, b2], np.concatenate([xa, loud]), 960)
    solo = Enhancer(random_model())
    alone = _stream(solo, [solo.allocate()], xa, 960)
    np.testing.assert_array_equal(run1[0], run2[0])  # what B hears never leaks into A
    assert np.abs(run1[0] - alone[0]).max() < 1e-5  # batching A with others changes nothing


def test_streams_not_in_a_call_keep_their_state() -> None:
    enh = Enhancer(random_model())
    a, b = enh.allocate(), enh.allocate()
    x = _noise(2, 19200)
    first = enh.process([a, b], x[:, :9600])
    enh.process([a], x[:1, 9600:])  # b sits this one out
    later_b = enh.process([b], x[1:, 9600:])
    ref = Enhancer(random_model())
    s = ref.allocate()
    expect = np.concatenate([ref.process([s], x[1:, :9600]), ref.process([s], x[1:, 9600:])], axis=1)
    assert np.abs(np.concatenate([first[1:], later_b], axis=1) - expect).max() < 1e-5


def test_slot_reuse_resets_state() -> None:
    enh = Enhancer(random_model(), capacity=1)
    slot = enh.allocate()
    enh.process([slot], _noise(1, 9600, seed=5) * 5)
    enh.free(slot)
    again = enh.allocate()
    assert again == slot
    x = _noise(1, 4800, seed=6)
    fresh = Enhancer(random_model())
    np.testing.assert_array_equal(enh.process([again], x), fresh.process([fresh.allocate()], x))


def test_skip_then_process_is_seamless() -> None:
    """With a pass-through mask, skip (bypass) and process interleave into the exact delayed input."""
    enh = Enhancer(constant_mask_model(1.0))
    slot = enh.allocate()
    x = _noise(1, 960 * 8)
    out = []
    for i, start in enumerate(range(0, x.shape[1], 960)):
        step = enh.skip if i in (2, 3, 6) else enh.process
        out.append(step([slot], x[:, start : start + 960]))
    y = np.concatenate(out, axis=1)
    np.testing.assert_allclose(y[0, 480:], x[0, :-480], atol=1e-5)


def test_bad_calls_raise_clear_errors() -> None:
    enh = Enhancer(random_model())
    slot = enh.allocate()
    with pytest.raises(ValueError, match="audio must be"):
        enh.process([slot], np.zeros((1, 500), np.float32))
    with pytest.raises(ValueError, match="audio must be"):
        enh.process([slot], np.zeros((2, 960), np.float32))
    with pytest.raises(ValueError, match="not allocated"):
        enh.process([7], np.zeros((1, 960), np.float32))
    with pytest.raises(ValueError, match="twice"):
        enh.process([slot, slot], np.zeros((2, 960), np.float32))
    with pytest.raises(ValueError, match="atten_lim_db"):
        enh.process([slot], np.zeros((1, 960), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not allocated"):
        enh.free(9)
