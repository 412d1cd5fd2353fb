"""Recall and precision of the redaction detectors on the labelled corpus in tests/records, per kind,
plus the cost of redacting one sentence (it runs on the event loop for every final transcript).

    .venv/bin/python benchmarks/redaction_corpus.py
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "records"))


def main() -> int:
    from test_redaction import load_corpus, score

    from gateway.records.redact import Redactor

    rows = load_corpus()
    print(
        f"corpus: {len(rows)} sentences, {sum(len(r['spans']) for r in rows)} labelled spans, "
        f"{sum(1 for r in rows if not r['spans'])} sentences without personal data"
    )
    print(f"{'kind':<8} {'spans':>5} {'recall':>7} {'precision':>9} {'false+':>6}")
    for kind, s in score(rows).items():
        line = f"{kind:<8} {s['labelled']:>5} {s['recall']:>7.3f} {s['precision']:>9.3f}"
        print(f"{line} {s['false_positives']:>6}")
    red = Redactor()
    texts = [r["text"] for r in rows]
    red.text(texts[0])
    n = 3
    t = min(timeit.repeat(lambda: [red.text(x) for x in texts], number=1, repeat=n))
    print(f"redaction cost: {t / len(texts) * 1e6:.0f} us per sentence (mean over the corpus, best of {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
