"""A bad weights file fails at load time with WeightsError naming the file, never mid-call."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mediaserver.enhance.stage import EnhancerStage
from mediaserver.enhance.weights import WeightsError, load_model, save_model
from test_enhance_common import random_model, saved


def _good(tmp_path: Path) -> Path:
    return saved(random_model(), tmp_path, "good.pt")


def test_round_trip(tmp_path: Path) -> None:
    model = random_model()
    loaded = load_model(saved(model, tmp_path))
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "garbage.pt"
    p.write_bytes(b"\x89PNG\r\n not a checkpoint at all" * 10)
    with pytest.raises(WeightsError, match="garbage.pt"):
        EnhancerStage(p)


def test_truncated_file(tmp_path: Path) -> None:
    data = _good(tmp_path).read_bytes()
    p = tmp_path / "truncated.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated.pt"):
        EnhancerStage(p)


def test_wrong_format(tmp_path: Path) -> None:
    p = tmp_path / "other.pt"
    torch.save({"state_dict": random_model().state_dict()}, p)  # a plain torch checkpoint
    with pytest.raises(WeightsError, match="not a mediaserver enhancer checkpoint"):
        EnhancerStage(p)


def test_wrong_shapes(tmp_path: Path) -> None:
    p = tmp_path / "shapes.pt"
    payload = torch.load(_good(tmp_path), weights_only=True)
    payload["config"]["hidden"] = 32  # config no longer matches the tensors
    torch.save(payload, p)
    with pytest.raises(WeightsError, match="architecture"):
        EnhancerStage(p)


def test_non_finite_weights(tmp_path: Path) -> None:
    model = random_model()
    with torch.no_grad():
        model.decoder.bias.fill_(float("nan"))
    p = tmp_path / "nan.pt"
    save_model(model, p)
    with pytest.raises(WeightsError, match="non-finite"):
        EnhancerStage(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        EnhancerStage(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [b"garbage\n", b"\x00 not a checkpoint\n", b"\x80\x04\x95" + b"\x00" * 40])
def test_a_file_the_safe_unpickler_refuses_is_one_short_reason_without_unsafe_advice(tmp_path: Path, content) -> None:
    """torch's own message for such a file advises re-running with ``weights_only=False`` (code
    from the file would run) and spans paragraphs; a fresh user's trial saw both passed on in
    serve's one-line error. The reason is kept, the advice is not."""
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(WeightsError) as failure:
        load_model(p)
    text = str(failure.value)
    assert str(p) in text and "\n" not in text and len(text) < 200 + len(str(p)), text
    assert "weights_only" not in text and "trusted source" not in text, text


# ---- fresh-user trial 5: a shipped model's name, wherever a --model is taken --------------------

def test_a_shipped_models_name_is_its_weights_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    """``bench --model msenh-v3-s8250`` and ``transcribe --asr-feed enhanced --model
    msenh-v3-s8250`` said "enhancer weights not found: msenh-v3-s8250" (they looked for a file
    of that name in the current folder) where ``serve`` and ``enhance`` take the name; an
    unknown word now lists the names there are."""
    from mediaserver.enhance.registry import ModelRegistry
    from mediaserver.enhance.weights import resolve_weights_path

    monkeypatch.chdir(tmp_path)   # no file of that name here
    registry = ModelRegistry()
    for name in registry.names():
        assert resolve_weights_path(name) == registry.get(name).weights
    model = load_model("msenh-v3-s8250")
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(WeightsError, match=r"msenh-v9 \(neither a file nor a model name: .*msenh-v3-s8250"):
        load_model("msenh-v9")
    (tmp_path / "msenh-v2").write_bytes(b"not a checkpoint")   # a file there wins over the name
    assert resolve_weights_path("msenh-v2") == Path("msenh-v2")
