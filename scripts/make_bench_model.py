#!/usr/bin/env python3
"""Write a SmolLM2-135M-shaped Llama model with random weights (normal, std 0.02) for
benchmarks: hidden 576, intermediate 1536, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied
embeddings (134.5 M parameters), as f32 safetensors (538 MB) in HF layout.

Usage: python3 scripts/make_bench_model.py [OUT_DIR]   (default: target/bench-models/smollm2-135m)
Needs numpy and safetensors (scripts/setup_python.sh, or `pip install numpy safetensors`).
Benchmarks feed token ids, not text, but grammar masks walk the tokenizer's whole vocabulary:
with the `tokenizers` package installed, a byte-level BPE of the full 49152 tokens is trained on
this Python's standard-library sources (same special tokens as the llama fixture); without it
the small fixture tokenizer (384 tokens) is copied, and constrained-decoding figures are then
not representative.
"""
import glob
import json
import os
import shutil
import sys
import sysconfig

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "bench-models", "smollm2-135m")
H, I, L, NH, NKV, V = 576, 1536, 30, 9, 3, 49152
HD = H // NH


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    normal = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    t = {"model.embed_tokens.weight": normal(V, H), "model.norm.weight": np.ones(H, np.float32)}
    for i in range(L):
        p = f"model.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = np.ones(H, np.float32)
        t[f"{p}.post_attention_layernorm.weight"] = np.ones(H, np.float32)
        t[f"{p}.self_attn.q_proj.weight"] = normal(NH * HD, H)
        t[f"{p}.self_attn.k_proj.weight"] = normal(NKV * HD, H)
        t[f"{p}.self_attn.v_proj.weight"] = normal(NKV * HD, H)
        t[f"{p}.self_attn.o_proj.weight"] = normal(H, NH * HD)
        t[f"{p}.mlp.gate_proj.weight"] = normal(I, H)
        t[f"{p}.mlp.up_proj.weight"] = normal(I, H)
        t[f"{p}.mlp.down_proj.weight"] = normal(H, I)
    save_file(t, os.path.join(OUT, "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V,
        "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
        "num_attention_heads": NH, "num_key_value_heads": NKV, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True,
        "hidden_act": "silu", "bos_token_id": 3, "eos_token_id": 2, "torch_dtype": "float32",
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    fixture = os.path.join(ROOT, "tests", "fixtures", "llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(os.path.join(fixture, name), OUT)
    train_tokenizer()
    print(f"wrote {OUT}: {sum(x.size for x in t.values()) / 1e6:.1f} M parameters")


def train_tokenizer() -> None:
    """Replace the copied tokenizer.json with a full-size byte-level BPE, when possible."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        print("tokenizers not installed: keeping the 384-token fixture tokenizer")
        return
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"), recursive=True))

    def texts():
        for path in files:
            with open(path, "rb") as f:
                yield f.read().decode("utf-8", errors="replace")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=V,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    print(f"trained a {tok.get_vocab_size()}-token byte-level BPE on {len(files)} files")


if __name__ == "__main__":
    main()
