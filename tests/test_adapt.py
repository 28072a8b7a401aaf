"""Test-time normalisation adaptation: the statistics it computes, that it leaves the loaded model alone, how a
model folder's ``norm_adaptation`` setting reaches inference, and ``predict --no-adapt``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from efficientcellseg.adapt import AdaptSettings, adapt_batchnorm, adapted_model, batchnorm_layers
from efficientcellseg.datasets import get_dataset
from efficientcellseg.errors import ModelError
from efficientcellseg.infer import build_segmenter, wants_adaptation
from efficientcellseg.onnx_backend import _transient_dir
from efficientcellseg.weights import LoadedModel, create_untrained_model_folder, load_model_folder, update_config


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)).eval()


def _inputs(n: int, seed: int = 1, scale: float = 3.0, shift: float = 2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(shift + scale * rng.standard_normal((3, 16, 16))).astype(np.float32) for _ in range(n)]


def test_settings_from_config_and_their_checks() -> None:
    assert AdaptSettings.from_config({}) is None
    assert AdaptSettings.from_config({"norm_adaptation": {"weight": 0.5}}) == AdaptSettings(0.5, 2)
    assert AdaptSettings.from_config({"norm_adaptation": {"weight": 1, "batch_size": 6}}) == AdaptSettings(1.0, 6)
    assert AdaptSettings(1.0).to_config() == {"weight": 1.0, "batch_size": 2}
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="weight"):
            AdaptSettings(bad)
    with pytest.raises(ValueError, match="unknown norm_adaptation key"):
        AdaptSettings.from_config({"norm_adaptation": {"weight": 1.0, "momentum": 0.1}})


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_first_layer_statistics_are_the_inputs_mixed_with_the_trained(weight) -> None:
    """The first BN sees the first conv's output, whatever came before: its new statistics are exactly that
    output's pooled moments (weight 1) or their mixture with the trained ones."""
    net = _net()
    bn = net[1]
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(2.0)
    xs = _inputs(8)
    with torch.no_grad():
        y = net[0](torch.from_numpy(np.stack(xs))).double()
    mean = y.mean(dim=(0, 2, 3))
    var = (y * y).mean(dim=(0, 2, 3)) - mean**2  # batches are equal in size: pooled == whole
    n = adapt_batchnorm(net, xs, AdaptSettings(weight, batch_size=4))
    assert n == 8
    want_mean = weight * mean + (1 - weight) * 0.5
    want_var = weight * var + (1 - weight) * 2.0 + weight * (1 - weight) * (mean - 0.5) ** 2
    np.testing.assert_allclose(bn.running_mean.numpy(), want_mean.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), want_var.numpy(), rtol=1e-4, atol=1e-5)


def test_adapted_outputs_are_normalised_to_the_new_data() -> None:
    """After full adaptation the last BN's output over the adaptation data has mean ~beta and std ~gamma."""
    net = _net()
    xs = _inputs(12, scale=10.0, shift=-7.0)  # far from the (default) trained statistics
    adapt_batchnorm(net, xs, AdaptSettings(1.0))
    with torch.no_grad():
        out = net(torch.from_numpy(np.stack(xs)))
    bn = net[4]
    np.testing.assert_allclose(out.mean(dim=(0, 2, 3)).numpy(), bn.bias.detach().numpy(), atol=1e-3)
    np.testing.assert_allclose(out.std(dim=(0, 2, 3)).numpy(), bn.weight.detach().abs().numpy(), rtol=1e-2)


def test_adapted_model_is_a_copy_with_its_own_identity(tmp_path) -> None:
    net = _net()
    before = [m.running_mean.clone() for m in batchnorm_layers(net)]
    model = LoadedModel(net=net, config={}, thresholds={}, folder=tmp_path / "m", sha256="ab" * 32)
    a = adapted_model(model, _inputs(6), AdaptSettings(1.0))
    b = adapted_model(model, _inputs(6), AdaptSettings(1.0))
    c = adapted_model(model, _inputs(6, seed=2), AdaptSettings(1.0))
    for m, m0 in zip(batchnorm_layers(net), before, strict=True):
        assert torch.equal(m.running_mean, m0)  # the loaded model is untouched
    assert a.net is not net and a.sha256 != model.sha256
    assert a.sha256 == b.sha256  # deterministic for the same inputs
    assert c.sha256 != a.sha256
    assert adapted_model(model, [], AdaptSettings(1.0)) is model  # nothing to adapt on: the trained statistics


def _frame(seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2) * 800.0
    return np.clip(1000 + disc[None] + rng.normal(0, noise, (3, 64, 64)), 0, 65535).astype(np.uint16)


def test_model_config_switches_adaptation_on_inference(tmp_path) -> None:
    """A folder with ``norm_adaptation`` adapts to the frames given (and only then); without the key the
    frames change nothing."""
    plain = create_untrained_model_folder(tmp_path / "plain" / "A549-SIM-seg", "A549-SIM", seed=1)
    adapting = create_untrained_model_folder(tmp_path / "adapting" / "A549-SIM-seg", "A549-SIM", seed=1)
    update_config(adapting, {"norm_adaptation": {"weight": 1.0}})
    cfg = get_dataset("A549-SIM")
    assert wants_adaptation(cfg, adapting) and not wants_adaptation(cfg, plain)
    frames = [_frame(s, 300.0) for s in (1, 2)]
    test = _frame(3, 300.0)
    ref = build_segmenter("A549-SIM", plain, backend="torch").probabilities(test)["seg"]
    plain_seg = build_segmenter("A549-SIM", plain, backend="torch", adapt_frames=frames)
    same = plain_seg.probabilities(test)["seg"]
    np.testing.assert_array_equal(ref, same)
    assert "adapt" not in plain_seg.timer.seconds  # no adaptation stage in the timing line
    unadapted = build_segmenter("A549-SIM", adapting, backend="torch").probabilities(test)["seg"]
    np.testing.assert_array_equal(ref, unadapted)  # no frames: trained statistics
    adapted = build_segmenter("A549-SIM", adapting, backend="torch", adapt_frames=frames).probabilities(test)["seg"]
    assert np.abs(adapted - ref).max() > 1e-3


def test_onnx_export_of_an_adapted_model_is_its_own(tmp_path) -> None:
    """The ONNX cache is keyed by the adapted statistics: the exact path gives the adapted network's output."""
    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    update_config(folder, {"norm_adaptation": {"weight": 1.0}})
    frames = [_frame(1, 300.0)]
    test = _frame(3, 300.0)
    torch_p = build_segmenter("A549-SIM", folder, backend="torch", adapt_frames=frames).probabilities(test)["seg"]
    onnx_p = build_segmenter("A549-SIM", folder, backend="onnx", adapt_frames=frames).probabilities(test)["seg"]
    plain = build_segmenter("A549-SIM", folder, backend="onnx").probabilities(test)["seg"]
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    assert np.abs(plain - onnx_p).max() > 1e-3
    # cached: the trained network's export and the graph the adapted statistics are written into (BatchNorm
    # kept); the adapted network's own export was deleted once loaded
    cached = sorted(p.name for p in (folder / ".onnx-cache").glob("*.onnx"))
    assert len(cached) == 2 and cached[0].endswith("-v2.onnx") and cached[1].endswith("-v2bn.onnx")
    assert not list(_transient_dir().glob("*.onnx"))


def test_adapted_export_is_the_cached_graph_with_new_statistics(tmp_path) -> None:
    """An adapted network is not traced again: its statistics go into the folder's cached graph that keeps the
    BatchNorm layers, which then folds to the same operators and outputs as a fresh trace; made once."""
    import onnx
    import onnxruntime as ort

    from efficientcellseg.onnx_backend import _trace, _write_statistics, export_onnx

    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    model = load_model_folder(folder)
    first = adapted_model(model, _inputs(4, seed=1), AdaptSettings(1.0))
    second = adapted_model(model, _inputs(4, seed=2, scale=0.5, shift=-1.0), AdaptSettings(1.0))
    traced = tmp_path / "traced.onnx"
    _trace(first.net, 384, traced, simplify=True)
    x = np.random.default_rng(0).random((1, 3, 384, 384), dtype=np.float32)

    def run(path):
        ops = sorted(n.op_type for n in onnx.load(str(path)).graph.node)
        p = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        path.unlink()  # the shared temporary folder is checked empty by other tests
        return ops, p

    ops_traced, p_traced = run(traced)
    ops_first, p_first = run(export_onnx(first))
    assert ops_first == ops_traced and "BatchNormalization" not in ops_first
    np.testing.assert_allclose(p_first, p_traced, atol=1e-5)
    template = next((folder / ".onnx-cache").glob("*-v2bn.onnx"))
    made = template.stat().st_mtime_ns
    _, p_second = run(export_onnx(second))
    assert template.stat().st_mtime_ns == made  # reused
    assert np.abs(p_second - p_first).max() > 1e-3  # the second sequence's statistics, not the first's
    with pytest.raises(ModelError, match="delete the file"):
        _write_statistics(template, tmp_path / "bad.onnx", {"net.no.such.running_mean": np.zeros(3)})


def test_invalid_adaptation_setting_is_one_clear_error(tmp_path) -> None:
    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    update_config(folder, {"norm_adaptation": {"weight": 2.0}})
    with pytest.raises(ModelError, match="invalid 'norm_adaptation'"):
        build_segmenter("A549-SIM", folder, backend="torch", adapt_frames=[_frame(1, 300.0)])


def test_int8_of_an_adapted_model_leaves_no_files(tmp_path, caplog) -> None:
    """int8 quantises the adapted network (its fp32 export and int8 copy in the temporary folder), agrees
    with the adapted fp32 network far better than with the unadapted one, and deletes both files once loaded;
    the folder's own cache holds only the graph the statistics are written into."""
    import tifffile

    folder = create_untrained_model_folder(tmp_path / "A549-SIM-seg", "A549-SIM", seed=1)
    update_config(folder, {"norm_adaptation": {"weight": 1.0}})
    frame = tmp_path / "seq" / "t000.tif"
    frame.parent.mkdir()
    tifffile.imwrite(frame, _frame(1, 300.0), photometric="minisblack")
    test = _frame(3, 300.0)
    exact = build_segmenter("A549-SIM", folder, backend="onnx", adapt_frames=[frame]).probabilities(test)["seg"]
    with caplog.at_level(logging.WARNING, logger="efficientcellseg.infer"):
        fast = build_segmenter("A549-SIM", folder, precision="int8", calibration_frames=[frame],
                               adapt_frames=[frame]).probabilities(test)["seg"]
    assert any("quantised again for every sequence" in r.getMessage() for r in caplog.records)
    assert not list(_transient_dir().glob("*.onnx"))
    assert [p.name[-10:] for p in (folder / ".onnx-cache").glob("*.onnx")] == ["-v2bn.onnx"]  # the graph only
    # An untrained network's int8 error grows with the spread of its outputs, which adaptation widens (batch 2:
    # 0.051 mean abs, batch 6: 0.035), so no fixed bound fits; quantising the unadapted network instead would
    # land near ``plain`` (0.14 away from ``fast`` here).
    plain = build_segmenter("A549-SIM", folder, backend="onnx").probabilities(test)["seg"]  # caches, so last
    assert np.abs(fast - exact).mean() < 0.5 * np.abs(fast - plain).mean()
