"""Word error rate with the normalisation the test corpus needs.

Lower-case, strip punctuation, and spell digits the way the references say
them ("2" -> "two"), so a model that writes numbers as digits is not
penalised for it.
"""

from __future__ import annotations

import re
import unicodedata

_NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
    "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten",
    "11": "eleven", "12": "twelve", "20": "twenty", "30": "thirty",
}  # fmt: skip
_WORD_RE = re.compile(r"[\w']+")


def normalize(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    words = []
    for w in _WORD_RE.findall(text):
        w = w.strip("'")
        if not w:
            continue
        words.append(_NUMBERS.get(w, w))
    return words


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def common_in_order(a: list[str], b: list[str]) -> int:
    """How many words the two lists share in order (their longest common
    subsequence): how much of a sentence reappears in another transcript."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
