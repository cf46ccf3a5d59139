"""Classification accuracy score (Ravuri & Vinyals 2019): a classifier trained on generated
images only, tested on real test images. It asks whether the generated images of each class
carry what a classifier needs to recognise real images of that class.

    out = classification_accuracy_score(generated, test_set, ClassifyConfig(epochs=10))
"""

from __future__ import annotations

import numpy as np

from .._device import pick_device
from ..labels.classifier import (ClassifyConfig, _Images, _per_class_accuracy,
                                 _balanced, predict_logits, train_classifier)


def classification_accuracy_score(generated, test_set, cfg: ClassifyConfig) -> dict:
    """{"balanced_accuracy", "accuracy", "per_class": [...]} on `test_set`."""
    cfg.check()
    C = int(generated.num_classes)
    if test_set.num_classes != C:
        raise ValueError(f"the test set has {test_set.num_classes} classes, the generated set {C}")
    if test_set.channels != generated.channels or test_set.resolution != generated.resolution:
        raise ValueError(f"generated images are {generated.resolution}x{generated.channels}, test "
                         f"images {test_set.resolution}x{test_set.channels}")
    device = pick_device(cfg.device)
    y = np.asarray(generated.labels, dtype=np.int64)
    model = train_classifier(_Images(generated.images, device), y, np.arange(len(y)), C,
                             generated.channels, int(min(generated.resolution)), cfg,
                             seed=cfg.seed, desc="CAS classifier")
    t_y = np.asarray(test_set.labels, dtype=np.int64)
    logits = predict_logits(model, _Images(test_set.images, device), np.arange(len(t_y)),
                            batch_size=cfg.eval_batch_size)
    pred = logits.argmax(1).numpy()
    acc = _per_class_accuracy(pred, t_y, C)
    return dict(balanced_accuracy=_balanced(acc), accuracy=float((pred == t_y).mean()),
                per_class=[None if np.isnan(a) else float(a) for a in acc],
                settings=dict(arch=cfg.arch, epochs=cfg.epochs, test_images=int(len(t_y))))
