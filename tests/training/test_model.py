"""The model definition: exact CAM head, strict checkpoints, and base weights that fail clearly offline."""

from __future__ import annotations

import urllib.error

import pytest

torch = pytest.importorskip("torch")

from training import model as model_module  # noqa: E402
from training.model import (  # noqa: E402
    WeightsUnavailable,
    build_model,
    load_body_weights,
    load_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.train


@pytest.mark.parametrize("labels", [2, 4])
def test_logits_are_the_mean_of_the_cam_plus_bias(labels):
    torch.manual_seed(0)
    net = build_model("binary" if labels == 2 else "multiclass", list("abcd"[:labels])).eval()
    with torch.no_grad():
        net.head.bias.fill_(0.3)
        x = torch.randn(3, 1, 64, 64)
        logits, cam = net(x)
        pooled = net.body(x).mean(dim=(2, 3))
        reference = pooled @ net.head.classifier.weight[:, :, 0, 0].T + net.head.bias
    assert logits.shape == (3, 1 if labels == 2 else labels)
    assert cam.shape == (3, logits.shape[1], 2, 2)
    torch.testing.assert_close(logits, cam.mean(dim=(2, 3)) + 0.3)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip_is_strict(tmp_path):
    net = build_model("multiclass", list("abcd"))
    path = tmp_path / "model.pt"
    save_checkpoint(net, path, ["a", "b", "c", "d"], "multiclass", {"lr": 0.01})
    loaded, meta = load_checkpoint(path)
    assert meta == {"labels": ["a", "b", "c", "d"], "task": "multiclass", "hparams": {"lr": 0.01}}
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["head.bias"]
    torch.save(payload, path)
    with pytest.raises(RuntimeError, match="head.bias"):
        load_checkpoint(path)


def test_imagenet_weights_offline_stop_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached here

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(WeightsUnavailable) as error:
        load_body_weights(build_model("binary", ["normal", "adenocarcinoma"]), "imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert "hub/checkpoints" in message and "base_model.weights" in message


def test_imagenet_weights_when_cached_map_onto_the_grey_body(monkeypatch):
    from torchvision.models import resnet18

    rgb = resnet18().state_dict()
    monkeypatch.setattr(model_module.ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", lambda **_: dict(rgb))
    net = build_model("binary", ["normal", "adenocarcinoma"])
    assert load_body_weights(net, "imagenet") == "imagenet"
    torch.testing.assert_close(net.body[0].weight, rgb["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(net.body[4][0].conv1.weight, rgb["layer1.0.conv1.weight"])


def test_weights_from_a_path_and_a_wrong_file(tmp_path):
    source = build_model("binary", ["normal", "adenocarcinoma"])
    path = tmp_path / "body.pt"
    torch.save(source.state_dict(), path)
    target = build_model("multiclass", list("abcd"))
    load_body_weights(target, str(path))
    torch.testing.assert_close(target.body[0].weight, source.body[0].weight)
    torch.save({"body.nonsense": torch.zeros(1)}, path)
    with pytest.raises(WeightsUnavailable, match="do not fit"):
        load_body_weights(build_model("binary", ["normal", "adenocarcinoma"]), str(path))
    with pytest.raises(WeightsUnavailable, match="no file"):
        load_body_weights(build_model("binary", ["normal", "adenocarcinoma"]), str(tmp_path / "missing.pt"))
