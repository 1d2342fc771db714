"""The phonemiser's grapheme-to-phoneme logic (plugins/python/phonemizer/g2p.py, what phonemizer_py.wasm runs)
run by CPython natively: the "Python native" figure of `cargo xtask bench speech`.

Usage: g2p_native.py ITERATIONS < SENTENCES (one a line)
Prints {"us_per_sentence": X, "phonemes": [...]}: the mean time of `g2p.phonemize` per sentence over ITERATIONS
passes (after one warm-up pass; the lexicon is loaded at import, outside the timing), and each sentence's
phonemes so the caller can check they are the other builds'.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "python", "phonemizer"))
import g2p  # noqa: E402  (found through the path above)


def main():
    iterations = int(sys.argv[1])
    sentences = [line for line in sys.stdin.read().splitlines() if line]
    phonemes = [g2p.phonemize(s) for s in sentences]
    t = time.perf_counter()
    for _ in range(iterations):
        for s in sentences:
            g2p.phonemize(s)
    elapsed = time.perf_counter() - t
    print(json.dumps({"us_per_sentence": elapsed / (iterations * len(sentences)) * 1e6, "phonemes": phonemes}))


if __name__ == "__main__":
    main()
