#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<parser>/ from real files in ../shared and tiny
models built here with the same layouts (each seed < 64 KB). The .lsb seed is made by
`lsb compress` from the tiny llama2.c checkpoint; pass the lsb binary as argv[1] to (re)make it.
Run from the repository root: python3 fuzz/make_seeds.py [path/to/lsb]"""
import json, os, random, shutil, struct, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
rng = random.Random(1234)


def out(parser, name, data):
    d = os.path.join(CORPUS, parser)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 64 * 1024, (parser, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def floats(n, scale=0.1):
    return [rng.uniform(-scale, scale) for _ in range(n)]


# Tiny Llama: dim 32, hidden 64, 1 layer, 4 heads / 2 kv heads, vocab 32, seq 8.
TINY = dict(dim=32, hidden=64, layers=1, heads=4, kv=2, vocab=32, seq=8)


def tiny_tensors(t=TINY, tied=True):
    d, h, kvd, v = t["dim"], t["hidden"], t["dim"] // t["heads"] * t["kv"], t["vocab"]
    ts = [("model.embed_tokens.weight", [v, d])]
    for l in range(t["layers"]):
        p = f"model.layers.{l}."
        ts += [(p + "input_layernorm.weight", [d]), (p + "self_attn.q_proj.weight", [d, d]),
               (p + "self_attn.k_proj.weight", [kvd, d]), (p + "self_attn.v_proj.weight", [kvd, d]),
               (p + "self_attn.o_proj.weight", [d, d]), (p + "post_attention_layernorm.weight", [d]),
               (p + "mlp.gate_proj.weight", [h, d]), (p + "mlp.up_proj.weight", [h, d]),
               (p + "mlp.down_proj.weight", [d, h])]
    ts.append(("model.norm.weight", [d]))
    if not tied:
        ts.append(("lm_head.weight", [v, d]))
    return ts


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def safetensors(tensors, dtype="F32"):
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, shape in tensors:
        n = numel(shape) * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        if dtype == "F32":
            data += struct.pack(f"<{numel(shape)}f", *floats(numel(shape)))
        else:
            data += bytes(rng.randrange(256) if i % 2 == 0 else 0x3c for i in range(n))
        off += n
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + data


def llama2c(t=TINY, tied=True):
    d, h, kvd, v, L, seq = t["dim"], t["hidden"], t["dim"] // t["heads"] * t["kv"], t["vocab"], t["layers"], t["seq"]
    hd = d // t["heads"]
    hdr = struct.pack("<7i", d, h, L, t["heads"], t["kv"], v if tied else -v, seq)
    n = v * d + L * d + L * d * d + 2 * L * kvd * d + L * d * d + L * d + 3 * L * h * d + d + 2 * seq * (hd // 2)
    if not tied:
        n += v * d
    return hdr + struct.pack(f"<{n}f", *floats(n))


def gguf(t=TINY, tied=True, gtype=0, vocab_pieces=None, version=3):
    """A llama.cpp-layout GGUF: gtype 0 F32, 1 F16, 30 BF16, 8 Q8_0 for matrices; norms F32."""
    def s(x):
        x = x.encode() if isinstance(x, str) else x
        return struct.pack("<Q", len(x)) + x
    kv = []
    def add(key, typ, payload):
        kv.append(s(key) + struct.pack("<I", typ) + payload)
    add("general.architecture", 8, s("llama"))
    add("general.alignment", 4, struct.pack("<I", 32))
    add("llama.context_length", 4, struct.pack("<I", t["seq"]))
    add("llama.embedding_length", 4, struct.pack("<I", t["dim"]))
    add("llama.block_count", 4, struct.pack("<I", t["layers"]))
    add("llama.feed_forward_length", 4, struct.pack("<I", t["hidden"]))
    add("llama.attention.head_count", 4, struct.pack("<I", t["heads"]))
    add("llama.attention.head_count_kv", 4, struct.pack("<I", t["kv"]))
    add("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    add("llama.rope.freq_base", 6, struct.pack("<f", 10000.0))
    if vocab_pieces:
        add("tokenizer.ggml.model", 8, s("llama"))
        add("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(vocab_pieces)) + b"".join(s(p) for p, _, _ in vocab_pieces))
        add("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, len(vocab_pieces)) + b"".join(struct.pack("<f", sc) for _, sc, _ in vocab_pieces))
        add("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(vocab_pieces)) + b"".join(struct.pack("<i", ty) for _, _, ty in vocab_pieces))
        add("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1))
        add("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2))
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    block = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    infos, data = [], b""
    for name, shape in tiny_tensors(t, tied):
        if name.startswith("model.layers."):
            parts = name.split(".")
            g = f"blk.{parts[2]}." + block[".".join(parts[3:-1])] + ".weight"
        else:
            g = names[name]
        typ = gtype if len(shape) == 2 else 0
        n = numel(shape)
        vals = floats(n)
        if typ == 0:
            blob = struct.pack(f"<{n}f", *vals)
        elif typ in (1, 30):
            blob = bytes(rng.randrange(256) if i % 2 == 0 else 0x3c for i in range(2 * n))
        else:  # Q8_0: f16 scale 2^-7 then 32 int8
            blob = b"".join(struct.pack("<H", 0x2000) + bytes(rng.randrange(256) for _ in range(32)) for _ in range(n // 32))
        data += b"\0" * (-len(data) % 32)
        ne = list(reversed(shape))
        infos.append(s(g) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne) +
                     struct.pack("<IQ", typ, len(data)))
        data += blob
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(kv)) + b"".join(kv) + b"".join(infos)
    head += b"\0" * (-len(head) % 32)
    return head + data


def small_vocab():
    # <unk>, <s>, </s>, 256 byte pieces, then a few merges: llama conventions.
    v = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    v += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    for i, p in enumerate(["\u2581", "e", "t", "a", "\u2581t", "he", "\u2581the", "o", "n", "\u2581a", "in", "s"]):
        v.append((p, -float(i), 1))
    return v


def main():
    lsb = sys.argv[1] if len(sys.argv) > 1 else None
    # safetensors: tiny real-layout files, and the first bytes of a real shard's header.
    out("safetensors", "tiny_f32", safetensors(tiny_tensors()))
    out("safetensors", "tiny_bf16", safetensors(tiny_tensors(), "BF16"))
    out("safetensors", "tiny_f16", safetensors(tiny_tensors()[:3], "F16"))
    with open(os.path.join(SHARED, "models/gpt2-attn-proj/gpt2_attn_c_proj.safetensors"), "rb") as f:
        out("safetensors", "gpt2_head_4k", f.read(4096))
    # config.json
    for m in ["bookworm-27m"]:
        with open(os.path.join(SHARED, "models", m, "config.json"), "rb") as f:
            out("config", m, f.read())
    out("config", "tiny_tied", json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 32, "max_position_embeddings": 8, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
        "tie_word_embeddings": True}).encode())
    out("config", "mistral", json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
        "vocab_size": 100, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "sliding_window": None}).encode())
    # HF index: the real one, and one naming the harness's shard.
    with open(os.path.join(SHARED, "models/bookworm-27m/model.safetensors.index.json"), "rb") as f:
        out("hf_index", "bookworm", f.read())
    out("hf_index", "harness_shard", json.dumps({"metadata": {"total_size": 544}, "weight_map": {
        "model.norm.weight": "shard.safetensors", "model.embed_tokens.weight": "shard.safetensors"}}).encode())
    # llama2.c checkpoints and tokenizer.
    out("llama2c", "tiny_tied", llama2c())
    out("llama2c", "tiny_untied", llama2c(tied=False))
    with open(os.path.join(SHARED, "models/stories260K/stories260K.bin"), "rb") as f:
        out("llama2c", "stories260K_head", f.read(4096))
    with open(os.path.join(SHARED, "models/stories260K/tok512.bin"), "rb") as f:
        out("llama2c_tokenizer", "tok512", f.read())
    # GGUF in llama.cpp's layout.
    out("gguf", "tiny_f32_vocab", gguf(vocab_pieces=small_vocab()))
    out("gguf", "tiny_f16_untied", gguf(tied=False, gtype=1))
    out("gguf", "tiny_bf16_v2", gguf(gtype=30, version=2))
    out("gguf", "tiny_q8_0", gguf(gtype=8))
    # .lsb from the tiny llama2.c checkpoint.
    if lsb:
        tmp = os.path.join(CORPUS, "..", "tiny.bin")
        with open(tmp, "wb") as f:
            f.write(llama2c())
        for scheme in ["lsb1", "q8"]:
            dst = os.path.join(CORPUS, "lsb", f"tiny_{scheme}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            subprocess.run([lsb, "compress", tmp, "-o", dst + ".lsb", "--scheme", scheme], check=True,
                           stdout=subprocess.DEVNULL)
            os.replace(dst + ".lsb", dst)
            assert os.path.getsize(dst) < 64 * 1024, dst
        os.remove(tmp)


if __name__ == "__main__":
    main()
