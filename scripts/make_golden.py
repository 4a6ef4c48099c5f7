#!/usr/bin/env python3
"""Build tiny random-weight models of each supported family and record Hugging Face
`transformers` golden outputs for them under tests/fixtures/.

What it writes, per fixture directory `tests/fixtures/<name>/`:
  config.json, model.safetensors (or shards + index), generation_config.json,
  tokenizer.json, tokenizer_config.json         -- a normal HF model directory
  golden.json         -- prompts, token ids, greedy continuations (f32 and bf16), chat render
  golden.safetensors  -- logits: per prompt all prompt positions and every greedy step

Deterministic: fixed seeds everywhere. Run with scripts/setup_python.sh's venv:
  .venv/bin/python scripts/make_golden.py
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
GEN_STEPS = 32
VOCAB = 384

CORPUS = [
    "The cordless drill has a 750 watt motor and two 18 volt batteries.",
    "These wireless headphones weigh 250 grams and last 30 hours on one charge.",
    "A four-person tent packs down to 4.2 kg and costs 189 euros.",
    "The espresso machine heats up in 25 seconds; its tank holds 1.8 litres.",
    "Running shoes, size 42, colour blue, rated 4.6 out of 5 by 1,204 customers.",
    "Is the café grinder in stock? Yes — we have 12 units in the Zürich store.",
    "Price: 49.99 € — warranty: 2 years. Délicieux crème brûlée maker!",
    "日本語のテキストも少し含めます。価格は三千円です。",
    "Emoji test: 🔨🎧⛺☕👟 and math ≤ ≥ ± × ÷.",
    "What is the wattage of this drill? It is 750 W. Which tent is lighter?",
    "Compare the battery life of the two headphones, please.",
    "user assistant system: helpful shopping assistant answers short questions.",
]

# Prefixes of corpus sentences: the briefly trained model continues them confidently, so
# greedy decisions have clear margins in bf16 too (a random model has near-ties everywhere,
# and which of two tied tokens wins then depends only on rounding order).
PROMPTS = [
    "The cordless drill has a",
    "Is the café grinder in stock? Yes",
    "Emoji test: 🔨",
]

CHAT_MESSAGES = [
    {"role": "system", "content": "  You are a helpful shopping assistant.  "},
    {"role": "user", "content": "What is the wattage of this drill?"},
    {"role": "assistant", "content": "It is 750 W."},
    {"role": "user", "content": "And the battery?"},
]

# A ChatML template that uses the Python-isms real templates use (.strip(), loop vars,
# raise_exception) and relies on HF's trim_blocks/lstrip_blocks whitespace handling.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system = messages[0]['content'].strip() %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system = 'You are a helpful assistant.' %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{{ bos_token }}<|im_start|>system\n{{ system }}<|im_end|>\n"
    "{% for message in loop_messages %}\n"
    "{% if message['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('Only user and assistant roles are supported after the system message') }}"
    "{% endif %}\n"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] | trim }}<|im_end|>\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


# Qwen2/3 tokenizers split digits one by one before byte-level BPE (transformers' Qwen2Tokenizer
# enforces this pattern, so the fixture's tokenizer.json must carry it as real Qwen ones do).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(add_bos: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if add_bos:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if add_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def perturb_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """HF initialises norms to 1 and biases to 0; perturb them so a loader that skips a norm
    weight or a bias cannot pass the golden test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def train_briefly(model: torch.nn.Module, tok: Tokenizer, steps: int = 150) -> float:
    """A few seconds of Adam on the corpus (one stream of all sentences) so continuations of
    corpus prefixes are confident. Deterministic: fixed seed, single thread."""
    ids = []
    for line in CORPUS:
        ids.extend(tok.encode(line).ids)
        ids.append(tok.token_to_id("<|im_end|>"))
    stream = torch.tensor([ids[:256]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(stream, labels=stream).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss)


BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
)

FIXTURES = [
    # name, model_type, extra config, on-disk dtype, shard, old-style config, add_bos
    ("llama", "llama", dict(tie_word_embeddings=True, rope_theta=10000.0), torch.float32, False, True, True),
    (
        "llama3",
        "llama",
        dict(
            tie_word_embeddings=False,
            num_hidden_layers=3,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
        torch.float32,
        True,
        False,
        True,
    ),
    ("mistral", "mistral", dict(tie_word_embeddings=False, sliding_window=8, head_dim=16), torch.float16, False, False, True),
    ("qwen2", "qwen2", dict(tie_word_embeddings=True, rope_theta=1000000.0), torch.bfloat16, False, False, False),
    ("qwen3", "qwen3", dict(tie_word_embeddings=False, head_dim=32, rope_theta=1000000.0), torch.bfloat16, False, False, False),
]


def to_old_style(path: str) -> None:
    """Rewrite config.json the way transformers 4.x wrote it (rope_theta/rope_scaling at the
    top level, torch_dtype), since real checkpoints come in both styles."""
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.get("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        cfg["rope_scaling"] = scaling
    else:
        cfg["rope_scaling"] = None
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def run_greedy(model, ids):
    model.generation_config.eos_token_id = None
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=GEN_STEPS,
        do_sample=False,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[0, len(ids):].tolist()
    logits = torch.stack([step[0] for step in out.logits]).float()  # (steps, vocab)
    assert len(tokens) == GEN_STEPS, "generation stopped early"
    return tokens, logits


def min_margin(logits: torch.Tensor) -> float:
    top2 = logits.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def build(name, model_type, extra, disk_dtype, shard, old_style, add_bos, seed):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)

    tok = train_tokenizer(add_bos)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>" if add_bos else None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    hf_tok.save_pretrained(out)

    cfg_kwargs = dict(BASE)
    cfg_kwargs.update(extra)
    cfg_kwargs["bos_token_id"] = tok.token_to_id("<s>") if add_bos else None
    cfg_kwargs["eos_token_id"] = tok.token_to_id("<|im_end|>")
    config = transformers.AutoConfig.for_model(model_type, **cfg_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    perturb_norms_and_biases(model, seed)
    loss = train_briefly(model, tok)
    perturb_norms_and_biases(model, seed + 1)
    model = model.to(disk_dtype)
    model.generation_config.eos_token_id = [cfg_kwargs["eos_token_id"], tok.token_to_id("<|endoftext|>")]
    model.generation_config.temperature = 0.7
    model.generation_config.top_p = 0.9
    model.generation_config.do_sample = True
    model.save_pretrained(out, max_shard_size="100KB" if shard else "2GB")
    if old_style:
        to_old_style(os.path.join(out, "config.json"))

    # Golden outputs come from the model as transformers loads it back from disk.
    tensors = {}
    record = dict(
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        disk_dtype=str(disk_dtype).replace("torch.", ""),
        gen_steps=GEN_STEPS,
        prompts=[],
    )
    reload = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = AutoModelForCausalLM.from_pretrained(out, dtype=dtype, attn_implementation="eager").eval()
        reload[dtype] = m
    loaded_tok = transformers.AutoTokenizer.from_pretrained(out)
    for i, prompt in enumerate(PROMPTS):
        ids = loaded_tok(prompt)["input_ids"]
        entry = dict(text=prompt, input_ids=ids)
        for dtype, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            m = reload[dtype]
            with torch.no_grad():
                logits = m(torch.tensor([ids])).logits[0].float()  # (seq, vocab)
            tokens, gen_logits = run_greedy(m, ids)
            tensors[f"p{i}.{tag}.prompt_logits"] = logits.contiguous()
            tensors[f"p{i}.{tag}.gen_logits"] = gen_logits.contiguous()
            entry[f"{tag}_greedy"] = tokens
            entry[f"{tag}_min_margin"] = min_margin(gen_logits)
            entry[f"{tag}_min_margin_first8"] = min_margin(gen_logits[:8])
            entry[f"{tag}_greedy_text"] = loaded_tok.decode(tokens)
            entry[f"{tag}_greedy_text_skip_special"] = loaded_tok.decode(tokens, skip_special_tokens=True)
        record["prompts"].append(entry)
    record["num_parameters"] = sum(p.numel() for p in reload[torch.float32].parameters())
    record["chat_messages"] = CHAT_MESSAGES
    record["chat_rendered"] = loaded_tok.apply_chat_template(
        CHAT_MESSAGES, tokenize=False, add_generation_prompt=True
    )
    record["chat_input_ids"] = loaded_tok.apply_chat_template(
        CHAT_MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    save_file(tensors, os.path.join(out, "golden.safetensors"))
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
    margins = [
        (round(p["f32_min_margin"], 4), round(p["bf16_min_margin_first8"], 4)) for p in record["prompts"]
    ]
    print(f"{name}: wrote {out}; train loss {loss:.3f}; min top1-top2 margins (f32, bf16) per prompt: {margins}")


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    for seed, spec in enumerate(FIXTURES):
        if not only or spec[0] in only:
            build(*spec, seed=1234 + seed)


if __name__ == "__main__":
    main()
