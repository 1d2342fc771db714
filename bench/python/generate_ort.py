"""The chat model driven by hand from Python (onnxruntime wheel): the greedy loop users write today.

Usage: generate_ort.py --model DIR --prompt-ids 1,2,3 [--max-new 128] [--threads 2] [--max-ctx N] [--stop-at-eos]
Prints one JSON line: {"ttft_ms": ..., "decode_tok_s": ..., "tokens": [...]}

It uses the graph the way it is meant to be used (model.onnx from xtask/python/convert_smollm2.py): one KV buffer
per layer of capacity max_ctx, bound through IOBinding as both past input and present output, so
GroupQueryAttention appends in place and nothing is copied per step. The prompt goes in as one prefill call.
Decoding runs the full --max-new tokens unless --stop-at-eos, so runs are comparable.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-ctx", type=int, default=0, help="KV capacity; default prompt + max-new")
    ap.add_argument("--stop-at-eos", action="store_true")
    args = ap.parse_args()

    cfg = json.load(open(f"{args.model}/config.json"))
    prompt = [int(t) for t in args.prompt_ids.split(",") if t]
    max_ctx = args.max_ctx or len(prompt) + args.max_new
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(f"{args.model}/model.onnx", so, providers=["CPUExecutionProvider"])

    binding = session.io_binding()
    kv_shape = (1, cfg["num_kv_heads"], max_ctx, cfg["head_dim"])
    cache = []  # keeps the numpy buffers alive: the OrtValues only borrow their memory
    for i in range(cfg["num_layers"]):
        for kind in ("key", "value"):
            buf = np.zeros(kv_shape, np.float32)
            value = ort.OrtValue.ortvalue_from_numpy(buf)
            binding.bind_ortvalue_input(f"past_key_values.{i}.{kind}", value)
            binding.bind_ortvalue_output(f"present.{i}.{kind}", value)
            cache.append((buf, value))
    logits = np.empty((1, cfg["vocab_size"]), np.float32)
    binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))

    def step(ids, past):
        n = len(ids)
        binding.bind_cpu_input("input_ids", np.array([ids], np.int64))
        binding.bind_cpu_input("position_ids", np.arange(past, past + n, dtype=np.int64)[None])
        binding.bind_cpu_input("seqlens_k", np.array([past + n - 1], np.int32))
        binding.bind_cpu_input("total_sequence_length", np.array(past + n, np.int32))
        session.run_with_iobinding(binding)
        return int(logits[0].argmax())

    eos = set(cfg["eos_token_ids"])
    start = time.perf_counter()
    tokens = [step(prompt, 0)]
    ttft = time.perf_counter() - start
    start = time.perf_counter()
    while len(tokens) < args.max_new and not (args.stop_at_eos and tokens[-1] in eos):
        tokens.append(step([tokens[-1]], len(prompt) + len(tokens) - 1))
    elapsed = time.perf_counter() - start
    print(json.dumps({"ttft_ms": ttft * 1000, "decode_tok_s": (len(tokens) - 1) / elapsed if elapsed > 0 else 0.0, "tokens": tokens}))


if __name__ == "__main__":
    main()
