"""//! Checks a converted SmolLM2 graph (convert_smollm2.py) against a plain fp32 numpy forward pass of the GGUF,
and against itself: cached vs full recompute, chunked vs one-shot prefill, batched vs single-row decode. Then
times greedy decoding with 2 threads, the way the Rust host drives the graph (IOBinding, past == present buffer).

Usage: python check_smollm2.py GGUF MODEL_DIR [--speed-only] [--no-speed]
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import Tokenizer

MAX_CTX = 1024
# 241 tokens with the chat template, close to the 243-token prompt llama.cpp was timed with.
LONG_PROMPT = "Summarize the following text in one sentence. " + " ".join(
    ["The history of the city goes back to Roman times, when a small settlement grew up on the banks of the river."] * 8
) + " It was a busy port for many centuries."


class Runner:
    """Drives model.onnx with per-layer KV buffers that GroupQueryAttention updates in place."""

    def __init__(self, model_dir, threads=2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(f"{model_dir}/model.onnx", so, providers=["CPUExecutionProvider"])
        self.cfg = json.load(open(f"{model_dir}/config.json"))
        self.layers = self.cfg["num_layers"]

    def new_cache(self, batch, max_ctx=MAX_CTX):
        shape = (batch, self.cfg["num_kv_heads"], max_ctx, self.cfg["head_dim"])
        arrays = [np.zeros(shape, np.float32) for _ in range(2 * self.layers)]
        return arrays

    def step(self, cache, ids, past_lens):
        """ids [b, s] int64, past_lens [b] -> logits [b, vocab]; cache (list of numpy arrays) is updated in place."""
        ids = np.asarray(ids, np.int64)
        b, s = ids.shape
        past = np.asarray(past_lens, np.int64)
        binding = self.sess.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("position_ids", past[:, None] + np.arange(s, dtype=np.int64)[None, :])
        binding.bind_cpu_input("seqlens_k", (past + s - 1).astype(np.int32))
        binding.bind_cpu_input("total_sequence_length", np.array((past + s).max(), np.int32))
        for i in range(self.layers):
            for j, kind in enumerate(("key", "value")):
                v = ort.OrtValue.ortvalue_from_numpy(cache[2 * i + j])
                binding.bind_ortvalue_input(f"past_key_values.{i}.{kind}", v)
                binding.bind_ortvalue_output(f"present.{i}.{kind}", v)
        logits = np.empty((b, self.cfg["vocab_size"]), np.float32)
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        self.sess.run_with_iobinding(binding)
        return logits


# ---------------------------------------------------------------- fp32 numpy reference

def reference_logits(gguf_path, ids):
    """Plain fp32 forward pass of the whole sequence, HF Llama semantics; returns the last position's logits."""
    r = GGUFReader(gguf_path)
    t = {x.name: x for x in r.tensors}
    f = lambda k: r.fields[k].contents()
    hidden, heads, kv, layers = f("llama.embedding_length"), f("llama.attention.head_count"), f("llama.attention.head_count_kv"), f("llama.block_count")
    hd, eps, theta = hidden // heads, f("llama.attention.layer_norm_rms_epsilon"), f("llama.rope.freq_base")

    def w(name):
        x = t[name]
        return dequantize(x.data, x.tensor_type).astype(np.float32) if x.tensor_type.name != "F32" else np.asarray(x.data, np.float32)

    def unperm(m, n):
        rows, cols = m.shape
        return m.reshape(n, rows // n // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    emb = w("token_embd.weight")
    x = emb[ids]
    n = len(ids)
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(z):  # [h, n, hd]
        rot = np.concatenate([-z[..., hd // 2 :], z[..., : hd // 2]], -1)
        return z * cos + rot * sin

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(layers):
        p = f"blk.{i}."
        h = norm(x, w(p + "attn_norm.weight"))
        q = (h @ unperm(w(p + "attn_q.weight"), heads).T).reshape(n, heads, hd).transpose(1, 0, 2)
        k = (h @ unperm(w(p + "attn_k.weight"), kv).T).reshape(n, kv, hd).transpose(1, 0, 2)
        v = (h @ w(p + "attn_v.weight").T).reshape(n, kv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, heads // kv, 0), np.repeat(v, heads // kv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = x + a @ w(p + "attn_output.weight").T
        h = norm(x, w(p + "ffn_norm.weight"))
        gt, up = h @ w(p + "ffn_gate.weight").T, h @ w(p + "ffn_up.weight").T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ w(p + "ffn_down.weight").T
    return norm(x[-1], w("output_norm.weight")) @ emb.T


# ---------------------------------------------------------------- checks

def chat_ids(tok, text):
    prompt = f"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return tok.encode(prompt, add_special_tokens=False).ids


def greedy(runner, ids, max_new, chunk=None, eos=(2,)):
    cache = runner.new_cache(1)
    t0 = time.perf_counter()
    chunk = chunk or len(ids)
    for start in range(0, len(ids), chunk):
        logits = runner.step(cache, [ids[start : start + chunk]], [start])
    ttft = time.perf_counter() - t0
    out, all_logits = [int(logits[0].argmax())], [logits[0].copy()]
    t1 = time.perf_counter()
    while len(out) < max_new and (eos is None or out[-1] not in eos):
        logits = runner.step(cache, [[out[-1]]], [len(ids) + len(out) - 1])
        out.append(int(logits[0].argmax()))
        all_logits.append(logits[0].copy())
    decode = (len(out) - 1) / (time.perf_counter() - t1)
    return out, all_logits, ttft, decode, cache


def main():
    gguf_path, model_dir = sys.argv[1], sys.argv[2]
    flags = set(sys.argv[3:])
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    runner = Runner(model_dir)
    ids = chat_ids(tok, "What is the capital of France?")
    failures = []

    def expect(ok, what):
        if not ok:
            failures.append(what)

    if "--speed-only" not in flags:
        out, logits, _, _, cache = greedy(runner, ids, 40)
        text = tok.decode(out, skip_special_tokens=True)
        print(f"greedy: {text!r} ({len(out)} tokens, prompt {len(ids)})")
        expect("Paris" in text, "the answer does not name Paris")

        ref = reference_logits(gguf_path, np.array(ids))
        d = np.abs(ref - logits[0])
        print(f"fp32 reference vs graph, first token: argmax {ref.argmax()} vs {logits[0].argmax()}, max|dlogit| {d.max():.2e}, mean {d.mean():.2e}")
        ref2 = reference_logits(gguf_path, np.array(ids + out[:5]))
        print(f"fp32 reference vs graph, 6th token: argmax {ref2.argmax()} vs {logits[5].argmax()}, max|dlogit| {np.abs(ref2 - logits[5]).max():.2e}")
        expect(ref.argmax() == logits[0].argmax() and ref2.argmax() == logits[5].argmax(), "graph and fp32 reference disagree")

        # cached decode vs recomputing the whole sequence with an empty cache
        worst = 0.0
        for k in (1, 5, len(out) - 1):
            full = runner.step(runner.new_cache(1), [ids + out[:k]], [0])[0]
            worst = max(worst, float(np.abs(full - logits[k]).max()))
        print(f"cached vs full recompute: max|dlogit| {worst:.2e}")
        expect(worst < 1e-3, "cached decoding differs from a full recompute")

        # chunked prefill (16) vs one shot, then decode a few tokens
        out16, logits16, _, _, cache16 = greedy(runner, ids, 10, chunk=16)
        dl = max(float(np.abs(a - b).max()) for a, b in zip(logits16, logits[:10]))
        dk = max(float(np.abs(a[:, :, : len(ids) + 9] - b[:, :, : len(ids) + 9]).max()) for a, b in zip(cache16, cache))
        print(f"chunked(16) vs one-shot prefill: tokens equal {out16 == out[:10]}, max|dlogit| {dl:.2e}, max|dKV| {dk:.2e}")
        expect(out16 == out[:10] and dl < 1e-3, "chunked prefill differs from one-shot prefill")

        # batched decode: 3 rows with different past lengths vs each row alone, in a buffer full of NaN (stale
        # content past a row's length must never be read), plus a free row riding along at position 0
        prompts = [ids, chat_ids(tok, "Name three colors."), tok.encode("The quick brown fox", add_special_tokens=False).ids]
        singles, batch_cache, lens, nexts = [], [np.full_like(a, np.nan) for a in runner.new_cache(4)], [], []
        for r, p in enumerate(prompts):
            o, lg, _, _, c = greedy(runner, p, 8, eos=None)
            singles.append((o, lg))
            # prefill the row's slot of the batch buffer through a batch-1 view of it
            view = [a[r : r + 1] for a in batch_cache]
            l = runner.step(view, [p], [0])
            nexts.append(int(l[0].argmax()))
            lens.append(len(p))
        worst, same = 0.0, True
        for k in range(1, 8):
            l = runner.step(batch_cache, [[t] for t in nexts] + [[0]], lens + [0])[:3]
            for r in range(3):
                same &= int(l[r].argmax()) == singles[r][0][k]
                worst = max(worst, float(np.abs(l[r] - singles[r][1][k]).max()))
            nexts = [int(x) for x in l.argmax(-1)]
            lens = [x + 1 for x in lens]
        print(f"batched(3 + 1 free row, past {[len(p) for p in prompts]}) vs single: tokens equal {same}, max|dlogit| {worst:.2e}")
        expect(same and worst < 1e-3, "batched decoding differs from single-row decoding")

    if "--no-speed" not in flags:
        long_prompt = chat_ids(tok, LONG_PROMPT)
        for name, p in (("short", ids), ("long", long_prompt)):
            greedy(runner, p, 8)  # warm-up
            best = None
            for _ in range(2):
                _, _, ttft, dec, _ = greedy(runner, p, 128, eos=None)
                best = (min(best[0], ttft), max(best[1], dec)) if best else (ttft, dec)
            print(f"speed {name} ({len(p)} tokens): TTFT {best[0] * 1000:.0f} ms, decode {best[1]:.1f} tok/s")
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
