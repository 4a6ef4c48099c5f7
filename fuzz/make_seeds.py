#!/usr/bin/env python3
"""Write the fuzz targets' seed corpus (fuzz/corpus/TARGET/*): small valid inputs of each kind.

config and chat_template seeds are the test fixtures' own files; the safetensors and GGUF
seeds are tiny models written here (a GGUF like tests/gguf_errors.rs's: hidden 8, one layer,
a 4-token BPE vocabulary and a chat template). Deterministic: re-running rewrites the same bytes.
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    """Write a seed unless the target already has the same bytes."""
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for other in os.listdir(d):
        with open(os.path.join(d, other), "rb") as f:
            if f.read() == data:
                return
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture_files():
    models = os.path.join(HERE, "..", "models")
    dirs = [os.path.join(FIXTURES, m) for m in sorted(os.listdir(FIXTURES))]
    dirs += [os.path.join(models, m) for m in sorted(os.listdir(models))]
    for model in dirs:
        for name, target in [("config.json", "config"), ("chat_template.jinja", "chat_template")]:
            path = os.path.join(model, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    put(target, f"{os.path.basename(model)}-{name}", f.read())
        path = os.path.join(model, "tokenizer_config.json")
        if os.path.isfile(path):
            with open(path) as f:
                template = json.load(f).get("chat_template")
            if isinstance(template, str):
                put("chat_template", f"{os.path.basename(model)}-tokenizer_config.jinja", template.encode())


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, size in tensors:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n * size]}
        data += bytes((i * 37) % 251 for i in range(n * size))
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    put("safetensors", "three-dtypes.safetensors", safetensors(
        [("a", "F32", [2, 3], 4), ("b", "BF16", [4], 2), ("c", "F16", [2, 2], 2)]))
    put("safetensors", "layers.safetensors", safetensors(
        [("model.embed_tokens.weight", "F32", [4, 8], 4),
         ("model.layers.0.input_layernorm.weight", "F32", [8], 4),
         ("model.layers.0.self_attn.q_proj.weight", "BF16", [8, 8], 2),
         ("model.norm.weight", "F32", [8], 4)], metadata={"format": "pt"}))


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(v):
    kind, x = v
    if kind == "u32":
        return struct.pack("<Ii", 4, x) if x < 0 else struct.pack("<II", 4, x)
    if kind == "f32":
        return struct.pack("<If", 6, x)
    if kind == "bool":
        return struct.pack("<I?", 7, x)
    if kind == "str":
        return struct.pack("<I", 8) + gguf_string(x)
    if kind == "strs":
        return struct.pack("<IIQ", 9, 8, len(x)) + b"".join(gguf_string(s) for s in x)
    if kind == "i32s":
        return struct.pack("<IIQ", 9, 5, len(x)) + b"".join(struct.pack("<i", i) for i in x)
    raise ValueError(kind)


def gguf_seed():
    kv = [
        ("general.architecture", ("str", "llama")), ("general.alignment", ("u32", 32)),
        ("llama.block_count", ("u32", 1)), ("llama.embedding_length", ("u32", 8)),
        ("llama.feed_forward_length", ("u32", 16)), ("llama.attention.head_count", ("u32", 2)),
        ("llama.attention.head_count_kv", ("u32", 1)), ("llama.context_length", ("u32", 64)),
        ("llama.attention.layer_norm_rms_epsilon", ("f32", 1e-5)),
        ("llama.rope.freq_base", ("f32", 10000.0)),
        ("tokenizer.ggml.model", ("str", "gpt2")), ("tokenizer.ggml.pre", ("str", "gpt-2")),
        ("tokenizer.ggml.tokens", ("strs", ["a", "b", "ab", "<|end|>"])),
        ("tokenizer.ggml.token_type", ("i32s", [1, 1, 1, 3])),
        ("tokenizer.ggml.merges", ("strs", ["a b"])),
        ("tokenizer.ggml.eos_token_id", ("u32", 3)),
        ("tokenizer.ggml.add_bos_token", ("bool", False)),
        ("tokenizer.chat_template", ("str", "{% for m in messages %}{{ m['content'] }}{% endfor %}")),
    ]
    shapes = [("token_embd.weight", [8, 4]), ("output_norm.weight", [8]),
              ("blk.0.attn_norm.weight", [8]), ("blk.0.attn_q.weight", [8, 8]),
              ("blk.0.attn_k.weight", [8, 4]), ("blk.0.attn_v.weight", [8, 4]),
              ("blk.0.attn_output.weight", [8, 8]), ("blk.0.ffn_norm.weight", [8]),
              ("blk.0.ffn_gate.weight", [8, 16]), ("blk.0.ffn_up.weight", [8, 16]),
              ("blk.0.ffn_down.weight", [16, 8])]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(kv))
    for k, v in kv:
        out += gguf_string(k) + gguf_value(v)
    offset = 0
    for name, dims in shapes:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 0, offset)
        n = 1
        for d in dims:
            n *= d
        offset += n * 4
    out += b"\0" * (-len(out) % 32)
    out += b"".join(struct.pack("<f", ((i % 7) - 3) / 10) for i in range(offset // 4))
    put("gguf", "tiny-llama.gguf", out)


if __name__ == "__main__":
    shutil.rmtree(CORPUS, ignore_errors=True)
    fixture_files()
    put("chat_template", "hermes_template.jinja", open(os.path.join(HERE, "..", "scripts", "hermes_template.jinja"), "rb").read())
    safetensors_seeds()
    gguf_seed()
