"""The same model driven by hand from Python (onnxruntime + tokenizers wheels): what users write today.

Usage: embed.py MODEL_DIR BATCH SECONDS -> prints {"batch": B, "sentences_per_s": X}
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

model_dir, batch, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sentences = [line for line in sys.stdin.read().splitlines() if line]
session = ort.InferenceSession(f"{model_dir}/model.onnx", providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tokenizer.enable_truncation(256)
tokenizer.enable_padding()


def embed(texts):
    enc = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    out = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    m = mask[..., None].astype(np.float32)
    v = (out * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


batches = [sentences[i : i + batch] for i in range(0, len(sentences) - batch + 1, batch)] or [sentences[:batch]]
embed(batches[0])
done, start, i = 0, time.perf_counter(), 0
while time.perf_counter() - start < seconds:
    embed(batches[i % len(batches)])
    done += len(batches[i % len(batches)])
    i += 1
print(json.dumps({"batch": batch, "sentences_per_s": done / (time.perf_counter() - start)}))
