"""The classifier networks: shapes, features, weights files (ours, torchvision's, timm's) and
the errors for weights of another architecture."""

import pytest
import torch

from sgan_fast.labels.classifier_nets import RESNETS, auto_arch, build_classifier, read_weights


@pytest.mark.parametrize("arch", sorted(RESNETS))
@pytest.mark.parametrize("channels,res", [(1, 28), (3, 32), (3, 72)])
def test_resnets_give_logits_and_features(arch, channels, res):
    torch.manual_seed(0)
    net = build_classifier(arch, 7, channels, res).eval()
    x = torch.rand(3, channels, res, res) * 2 - 1
    logits, feats = net(x), net.features(x)
    assert logits.shape == (3, 7) and feats.shape == (3, net.num_features)
    torch.testing.assert_close(net.fc(feats), logits)
    assert torch.isfinite(logits).all()


def test_auto_arch_follows_the_resolution():
    assert auto_arch(28) == auto_arch(64) == "resnet20"
    assert auto_arch(128) == "resnet18"
    assert build_classifier("auto", 3, 3, 128).stem[0].kernel_size == (7, 7)


def test_weights_round_trip_and_prefixes(tmp_path):
    torch.manual_seed(0)
    a = build_classifier("resnet8", 4, 1, 28).eval()
    torch.save({"state_dict": {"module." + k: v for k, v in a.state_dict().items()}}, tmp_path / "w.pt")
    b = build_classifier("resnet8", 4, 1, 28, weights=tmp_path / "w.pt").eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("other,match", [
    (dict(arch="resnet20", num_classes=4, channels=1), "missing from the file"),
    (dict(arch="resnet8", num_classes=5, channels=1), r"fc.weight: file \(4, 64\) vs model \(5, 64\)"),
    (dict(arch="resnet8", num_classes=4, channels=3), "of another shape"),
])
def test_weights_of_another_architecture_are_refused(tmp_path, other, match):
    torch.save(build_classifier("resnet8", 4, 1, 28).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=f"does not fit.*{match}"):
        build_classifier(other["arch"], other["num_classes"], other["channels"], 28,
                         weights=tmp_path / "w.pt")


def test_weights_files_that_are_not_state_dicts(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        read_weights(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        read_weights(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        read_weights(tmp_path / "list.pt")


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_classifier("resnet8", 1, 3, 32)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_classifier("vgg", 3, 3, 32)


def test_torchvision_model_from_imagenet_style_weights(tmp_path):
    tv = pytest.importorskip("torchvision", reason="torchvision models need torchvision (.ci/run installs it)")
    torch.manual_seed(0)
    imagenet = tv.models.resnet18(num_classes=1000)            # stands in for pretrained weights
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    net = build_classifier("torchvision:resnet18", 6, 1, 32, weights=tmp_path / "r18.pth",
                           input_size=64).eval()
    sd = net.net.state_dict()
    for k, v in imagenet.state_dict().items():                 # the backbone came from the file
        if not k.startswith("fc."):
            torch.testing.assert_close(sd[k], v, rtol=0, atol=0)
    assert net.net.fc.out_features == 6 and net.num_features == 512
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert net(x).shape == (2, 6) and net.features(x).shape == (2, 512)
    torch.testing.assert_close(net.net.fc(net.features(x)), net(x))
    # A file already fine-tuned to 6 classes loads whole, head included.
    torch.save(net.net.state_dict(), tmp_path / "r18_6.pth")
    again = build_classifier("torchvision:resnet18", 6, 1, 32, weights=tmp_path / "r18_6.pth",
                             input_size=64).eval()
    torch.testing.assert_close(again(x), net(x))
    with pytest.raises(ValueError, match="does not fit torchvision:resnet34"):
        build_classifier("torchvision:resnet34", 6, 3, 32, weights=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="torchvision has no model"):
        build_classifier("torchvision:no_such_net", 6, 3, 32)
    # classify's own classifier.pt (the wrapper's "net." keys) starts a new run too.
    torch.save({"format": "sgan_fast.Classifier", "state_dicts": [net.state_dict()]}, tmp_path / "c.pt")
    from_ckpt = build_classifier("torchvision:resnet18", 6, 1, 32, weights=tmp_path / "c.pt",
                                 input_size=64).eval()
    torch.testing.assert_close(from_ckpt(x), net(x))


def test_timm_model_from_local_weights(tmp_path):
    timm = pytest.importorskip("timm", reason="timm models need timm (.ci/run installs it)")
    torch.manual_seed(0)
    src = timm.create_model("resnet10t", pretrained=False)
    torch.save(src.state_dict(), tmp_path / "r10t.pth")
    net = build_classifier("timm:resnet10t", 3, 3, 32, weights=tmp_path / "r10t.pth").eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    torch.testing.assert_close(net.net.conv1[0].weight, src.conv1[0].weight)
    with pytest.raises(ValueError, match="does not fit timm:resnet18"):
        build_classifier("timm:resnet18", 3, 3, 32, weights=tmp_path / "r10t.pth")


def test_fixed_size_vision_transformers_get_their_input_size():
    pytest.importorskip("timm", reason="timm models need timm (.ci/run installs it)")
    net = build_classifier("timm:vit_tiny_patch16_224", 3, 1, 28).eval()
    assert net.input_size == 224
    with torch.no_grad():
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 3)
