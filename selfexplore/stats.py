"""Paired comparisons of two models evaluated on the same problems.

Two models' accuracies on one test set are not independent samples: most problems are solved by both or by
neither, and only the problems where they disagree carry the difference. So differences are estimated per problem
(b - a in {-1, 0, 1}) and their 95% interval comes from a paired bootstrap over problems — stratified by group
(one group per seed when runs are pooled), with a fixed seed, so the same inputs give the same interval.

    paired_difference([[1, 0, 1, ...]], [[1, 1, 1, ...]])   # -> {"mean": 0.333, "ci95": [lo, hi], "n": 3, ...}
"""

from __future__ import annotations

import random


def paired_difference(a: list[list[bool]], b: list[list[bool]], resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of b - a over all problems of all groups (a[g][i] and b[g][i]: the same problem), with its 95% paired
    bootstrap interval; also the counts of problems only a or only b solved."""
    if [len(g) for g in a] != [len(g) for g in b] or not any(a):
        raise ValueError("paired_difference needs the same non-empty problems, in the same order, for both models")
    diffs = [[int(y) - int(x) for x, y in zip(ga, gb)] for ga, gb in zip(a, b)]
    n = sum(map(len, diffs))
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        total = sum(sum(rng.choices(group, k=len(group))) for group in diffs if group)
        means.append(total / n)
    means.sort()
    return {
        "mean": sum(map(sum, diffs)) / n,
        "ci95": [means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]],
        "n": n,
        "only_a": sum(d == -1 for group in diffs for d in group),
        "only_b": sum(d == 1 for group in diffs for d in group),
    }
