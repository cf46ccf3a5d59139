"""How many synthetic images each class gets, and which class pairs get inter-class images.

    topup_counts([60, 6000, 464], "majority")    # -> [5940, 0, 5536]: every class to 6,000
    topup_counts([60, 6000, 464], 1000)          # -> [940, 0, 536]:   every class to 1,000
    topup_counts([60, 6000, 464], total=1000)    # -> [702, 0, 298]:   1,000 images, rarest first
    similar_pairs(soft_confusion(P, y, 3), 2)    # the 2 most confused class pairs
"""

from __future__ import annotations

from typing import Union

import numpy as np


def _counts(real_counts) -> np.ndarray:
    n = np.asarray(real_counts)
    if n.ndim != 1 or not len(n):
        raise ValueError(f"real_counts must be one count per class [C], got shape {n.shape}")
    if not np.issubdtype(n.dtype, np.integer) or (n < 0).any():
        raise ValueError(f"real_counts must be integers >= 0, got {n.tolist()}")
    return n.astype(np.int64)


def topup_counts(real_counts, count: Union[str, int, None] = "majority", *,
                 total: Union[int, None] = None) -> np.ndarray:
    """Synthetic images per class [C] (int64).

    count="majority": every class is topped up to the largest class's count.
    count=N: every class is topped up to N images (a class with N or more gets none).
    total=T (count=None): T synthetic images in all, given to the classes with the fewest
    images first (water-filling): the classes below a level L are raised to L, and the
    remainder, when T does not divide evenly, goes one image each to the rarest classes.
    """
    n = _counts(real_counts)
    if total is not None:
        if count not in (None, "majority"):
            raise ValueError("give either a per-class count or a total, not both")
        if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
            raise ValueError(f"the total must be an integer >= 0, got {total!r}")
        return _water_fill(n, int(total))
    if count == "majority":
        level = int(n.max())
    elif isinstance(count, (int, np.integer)) and not isinstance(count, bool):
        if count < 0:
            raise ValueError(f"the per-class count must be >= 0, got {count}")
        level = int(count)
    else:
        raise ValueError(f"count must be 'majority' or an integer >= 0, got {count!r}")
    return np.maximum(level - n, 0)


def _water_fill(n: np.ndarray, total: int) -> np.ndarray:
    add = np.zeros_like(n)
    if total == 0:
        return add
    order = np.argsort(n, kind="stable")          # rarest first; ties by class number
    s = n[order]
    # the highest level L with sum(max(L - n_c, 0)) <= total, found over the sorted counts
    level, k = int(s[0]), 1
    left = total
    while True:
        nxt = int(s[k]) if k < len(s) else None
        step = (nxt - level) if nxt is not None else None
        if step is not None and step * k <= left:
            left -= step * k
            level = nxt
            k += 1
            continue
        rise, extra = divmod(left, k)
        level += rise
        break
    for i, c in enumerate(order[:k]):
        add[c] = level - n[c] + (1 if i < extra else 0)
    return add


def soft_confusion(probs, labels, num_classes: int) -> np.ndarray:
    """[C, C] float64: row i is the mean probability vector of class i's images (held-out
    classifier probabilities, e.g. a soft-label bank's). Off-diagonal mass says which
    classes the classifier finds alike; a class without images gets a row of NaN."""
    P = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if P.ndim != 2 or P.shape[1] != num_classes or len(P) != len(y):
        raise ValueError(f"probabilities must be [N={len(y)}, C={num_classes}], got {P.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found {int(y.min())}..{int(y.max())}")
    M = np.full((num_classes, num_classes), np.nan)
    for c in range(num_classes):
        rows = P[y == c]
        if len(rows):
            M[c] = rows.mean(0)
    return M


def similar_pairs(confusion: np.ndarray, num_pairs: int) -> list:
    """The `num_pairs` unordered class pairs (i < j) with the most symmetric confusion
    (M[i, j] + M[j, i]) / 2, most confused first, as (i, j, similarity) tuples."""
    M = np.asarray(confusion, dtype=np.float64)
    C = M.shape[0]
    if M.shape != (C, C):
        raise ValueError(f"the confusion matrix must be square, got {M.shape}")
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
    most = C * (C - 1) // 2
    if num_pairs > most:
        raise ValueError(f"{C} classes have only {most} pairs, {num_pairs} asked for")
    S = (M + M.T) / 2
    i, j = np.triu_indices(C, 1)
    ok = np.isfinite(S[i, j])            # a class without images (a NaN row) pairs with none
    if num_pairs > int(ok.sum()):
        raise ValueError(f"only {int(ok.sum())} class pairs have a finite confusion, {num_pairs} asked for")
    i, j = i[ok], j[ok]
    order = np.lexsort((j, i, -S[i, j]))[:num_pairs]     # most similar; ties by class number
    return [(int(i[o]), int(j[o]), float(S[i[o], j[o]])) for o in order]
