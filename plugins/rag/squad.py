"""SQuAD v1.1 answer scoring: exact match and token F1 after the official normalisation
(lower case; punctuation and the articles a/an/the removed; white space collapsed), the
maximum over the gold answers. The same rules as the official ``evaluate-v1.1.py``."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    pred = normalize(prediction)
    return float(any(pred == normalize(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    pred = normalize(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
