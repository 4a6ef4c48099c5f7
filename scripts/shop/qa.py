"""Question/answer pairs about the catalog: the training corpus and the held-out evaluation sets.

Every question kind has TRAIN phrasings and HELDOUT phrasings that never appear in training; the
evaluation sets use only the held-out ones. Each answer has one fixed form, so a dataset line can
carry both the key fact (exact match after normalisation) and the whole reference answer.

    python scripts/shop/qa.py --catalog models/shop-tiny/catalog.json --corpus target/shop/corpus.jsonl \
        --eval-dir models/shop-tiny/eval --seed 7
"""

import argparse
import json
import os
import random

# ---- phrasings -------------------------------------------------------------------------------
# {n} is the product reference ("the Voltrex Pro X3" or "the Voltrex Pro X3 drill").
SPEC_TRAIN = [
    "What is the {attr} of {n}?", "What's the {attr} of {n}?", "Can you tell me the {attr} of {n}?",
    "I'd like to know the {attr} of {n}.", "{Attr} of {n}?", "What {attr} does {n} have?",
    "what is {n}'s {attr}", "Could you check the {attr} for {n}?",
]
SPEC_HELDOUT = [
    "Do you know the {attr} of {n}?", "Please give me the {attr} for {n}.",
    "Quick question: what's the {attr} on {n}?", "tell me {n}'s {attr}",
]
SPEC_SPECIFIC = {  # attribute -> (train, heldout) phrasings of its own
    "wattage": (["How many watts is {n}?", "How powerful is {n}?"], ["How many watts does {n} use?"]),
    "weight": (["How heavy is {n}?", "What does {n} weigh?"], ["How much does {n} weigh?"]),
    "capacity": (["How much does {n} hold?", "How big is {n}'s capacity?"], ["What can {n} hold?"]),
    "battery life": (["How long does the battery of {n} last?"], ["How long will {n} run on one charge?"]),
    "screen size": (["How big is the screen on {n}?"], ["What size display does {n} have?"]),
    "refresh rate": (["How fast does {n} refresh?"], ["What refresh rate can {n} do?"]),
    "heel drop": (["How much drop does {n} have?"], ["What's the drop on {n}?"]),
    "battery range": (["How far can {n} go on a charge?"], ["What range does {n} get?"]),
}
COMMON = {  # fact -> (train, heldout)
    "price": (
        ["How much is {n}?", "What does {n} cost?", "What is the price of {n}?", "price of {n}?",
         "How much do you charge for {n}?", "What's {n} selling for?"],
        ["How much would {n} set me back?", "Tell me the price of {n}.", "what's the cost of {n}"],
    ),
    "stock": (
        ["Is {n} in stock?", "Do you have {n} available?", "Can I buy {n} right now?",
         "is {n} available", "Do you have {n} in stock at the moment?"],
        ["Is {n} available to order today?", "Have you got {n} in stock?", "any stock of {n}?"],
    ),
    "colour": (
        ["What colour is {n}?", "What color is {n}?", "Which colour does {n} come in?", "colour of {n}?"],
        ["What color does {n} come in?", "Tell me the colour of {n}."],
    ),
    "rating": (
        ["What is the rating of {n}?", "How is {n} rated?", "What do customers rate {n}?",
         "rating of {n}?", "How many stars does {n} have?"],
        ["What's the customer rating for {n}?", "How well reviewed is {n}?"],
    ),
    "warranty": (
        ["How long is the warranty on {n}?", "What warranty does {n} have?", "Does {n} come with a warranty?",
         "warranty for {n}?", "Is there a guarantee with {n}?", "How many years is {n} covered for?"],
        ["How many years of warranty do I get with {n}?", "What's the guarantee on {n}?"],
    ),
}
COMPARE = {  # fact -> (train, heldout); {a} and {b} are product references
    "cheaper": (
        ["Which is cheaper, {a} or {b}?", "Which costs less: {a} or {b}?", "{a} or {b}, which is cheaper?",
         "Which one is less expensive, {a} or {b}?", "Which is cheaper between {a} and {b}?",
         "Of {a} and {b}, which costs less?", "Compare the prices of {a} and {b}.",
         "I want the cheaper one: {a} or {b}?"],
        ["Between {a} and {b}, which one is less expensive?", "Is {a} or {b} cheaper?"],
    ),
    "rating": (
        ["Which has the better rating, {a} or {b}?", "Which is rated higher: {a} or {b}?",
         "{a} or {b}, which has better reviews?", "Which do customers rate higher, {a} or {b}?",
         "Which is better rated between {a} and {b}?", "Of {a} and {b}, which has the higher rating?",
         "Compare the ratings of {a} and {b}.", "Does {a} or {b} have better reviews?"],
        ["Between {a} and {b}, which one do customers rate higher?", "Is {a} or {b} better rated?"],
    ),
}
DESCRIBE = ["Tell me about {n}.", "Describe {n}.", "What can you tell me about {n}?", "Give me the specs of {n}."]
SYSTEMS = [
    "You are Aisle's shopping assistant.", "You are a helpful shopping assistant. Answer briefly.",
    "You answer questions about products in our store.",
]
# Brands that are not in the catalog, made up from syllables: the model learns to say it is not
# sure about any brand it was not taught. Training and held-out brands are disjoint sets.
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "bel", "dri", "sa", "nu", "qui", "zen", "fa", "hol",
             "mar", "ost", "pel", "ri", "sto", "vy", "wen", "xa", "gal", "dor"]


def unknown_brands(rng, count, exclude):
    out = set()
    while len(out) < count:
        b = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 2, 3]))).capitalize()
        if b not in exclude and b.lower() not in {e.lower() for e in exclude}:
            out.add(b)
    return sorted(out)


UNKNOWN_SERIES = ["Pro", "Max", "Air", "Lite", "Ultra", "Classic", "Sport", "Prime", "One", "Plus"]
NOUNS = ["drill", "headphones", "tent", "coffee maker", "blender", "backpack", "monitor", "kettle",
         "smartwatch", "vacuum cleaner", "e-bike", "running shoes", "toaster", "camera", "laptop"]


# ---- answers ---------------------------------------------------------------------------------
def answer(p, fact):
    n = p["name"]
    if fact == "price":
        return f"The {n} costs ${p['price']}.", f"${p['price']}"
    if fact == "stock":
        if p["in_stock"]:
            return f"Yes, the {n} is in stock.", "in stock"
        return f"Sorry, the {n} is out of stock right now.", "out of stock"
    if fact == "colour":
        return f"The {n} comes in {p['colour']}.", p["colour"]
    if fact == "rating":
        return f"The {n} is rated {p['rating']} out of 5.", f"{p['rating']} out of 5"
    if fact == "warranty":
        y = p["warranty_years"]
        return f"The {n} has a {y}-year warranty.", f"{y}-year"
    spec = p["specs"][fact]
    value = f"{spec['value']} {spec['unit']}"
    return f"The {n} has a {fact} of {value}.", value


def describe(p):
    specs = ", ".join(f"{a} {s['value']} {s['unit']}" for a, s in p["specs"].items())
    stock = "in stock" if p["in_stock"] else "out of stock"
    return (f"The {p['name']} is a {p['colour']} {p['noun']} from {p['brand']}: ${p['price']}, "
            f"rated {p['rating']} out of 5, {p['warranty_years']}-year warranty, {specs}, {stock}.")


def compare(a, b, fact):
    """Both facts first, then the verdict: the model recalls each value, then compares in context."""
    if fact == "cheaper":
        w = a if float(a["price"]) < float(b["price"]) else b
        return (f"The {a['name']} costs ${a['price']} and the {b['name']} costs ${b['price']}, "
                f"so the {w['name']} is cheaper."), w, f"the {w['name']} is cheaper"
    w = a if float(a["rating"]) > float(b["rating"]) else b
    return (f"The {a['name']} is rated {a['rating']} and the {b['name']} is rated {b['rating']}, "
            f"so the {w['name']} has the better rating."), w, f"the {w['name']} has the better rating"


def refusal(name):
    return f"I'm not sure. I can't find the {name} in our catalog.", "not sure"


# ---- sampling --------------------------------------------------------------------------------
def ref(rng, p):
    """How a question names a product: with or without its kind."""
    return f"the {p['name']} {p['noun']}" if rng.random() < 0.3 else f"the {p['name']}"


def fill(template, **kw):
    out = template
    for k, v in kw.items():
        out = out.replace("{" + k + "}", v).replace("{" + k.capitalize() + "}", v.capitalize())
    # Casual phrasings (written in lower case) stay lower case; the rest start with a capital.
    return out if template[0].islower() else out[0].upper() + out[1:]


def fact_templates(fact, split):
    i = 0 if split == "train" else 1
    if fact in COMMON:
        return COMMON[fact][i]
    generic = SPEC_TRAIN if split == "train" else SPEC_HELDOUT
    return generic + SPEC_SPECIFIC[fact][i]


def facts_of(p):
    return list(COMMON) + list(p["specs"])


def fact_item(rng, p, fact, split):
    q = fill(rng.choice(fact_templates(fact, split)), n=ref(rng, p), attr=fact)
    a, key = answer(p, fact)
    return {"kind": f"fact/{fact}", "question": q, "answer": a, "expected": key}


def compare_item(rng, products, split):
    fact = rng.choice(list(COMPARE))
    while True:
        a, b = rng.sample(products, 2)
        field = "price" if fact == "cheaper" else "rating"
        if a["category"] == b["category"] and a[field] != b[field]:
            break
    q = fill(rng.choice(COMPARE[fact][0 if split == "train" else 1]), a=ref(rng, a), b=ref(rng, b))
    ans, w, verdict = compare(a, b, fact)
    loser = b if w is a else a
    return {"kind": f"compare/{fact}", "question": q, "answer": ans, "expected": verdict,
            "reject": [verdict.replace(w["name"], loser["name"])]}


def unknown_item(rng, brands, split):
    code = rng.choice("ABCDEGHKLMNPRSTVXZ") + str(rng.randint(1, 99))
    name = f"{rng.choice(brands)} {rng.choice(UNKNOWN_SERIES)} {code}"
    n = f"the {name} {rng.choice(NOUNS)}" if rng.random() < 0.5 else f"the {name}"
    fact = rng.choice(list(COMMON) + ["wattage", "weight", "capacity"])
    q = fill(rng.choice(fact_templates(fact, split)), n=n, attr=fact)
    a, key = refusal(name)
    return {"kind": "unknown", "question": q, "answer": a, "expected": key}


# Training questions sometimes come wrapped in pleasantries, so the model keys on the product
# and the attribute rather than on the exact sentence.
PREFIXES = ["Hi! ", "Hello, ", "Hey, ", "Quick one: ", "Excuse me, ", "Sorry to bother you, "]
SUFFIXES = [" Thanks!", " Thank you.", " Please.", " Cheers."]


def decorate(rng, question):
    if rng.random() < 0.15:
        question = rng.choice(PREFIXES) + question[0].lower() + question[1:]
    if rng.random() < 0.15:
        question = question + rng.choice(SUFFIXES)
    return question


def to_messages(rng, item, training):
    msgs = []
    if training and rng.random() < 0.15:
        msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
    question = decorate(rng, item["question"]) if training else item["question"]
    msgs.append({"role": "user", "content": question})
    return msgs


def corpus(products, rng, per_fact, n_compare, n_unknown, unknown):
    items = []
    for p in products:
        for fact in facts_of(p):
            items += [fact_item(rng, p, fact, "train") for _ in range(per_fact)]
        for _ in range(per_fact):
            items.append({"kind": "describe", "question": fill(rng.choice(DESCRIBE), n=ref(rng, p)),
                          "answer": describe(p)})
    items += [compare_item(rng, products, "train") for _ in range(n_compare)]
    items += [unknown_item(rng, unknown, "train") for _ in range(n_unknown)]
    rng.shuffle(items)
    return [{"messages": to_messages(rng, it, True), "answer": it["answer"], "kind": it["kind"]} for it in items]


def heldout(products, rng, n_compare, n_unknown, unknown):
    items = [fact_item(rng, p, rng.choice(facts_of(p)), "heldout") for p in products]
    items += [compare_item(rng, products, "heldout") for _ in range(n_compare)]
    items += [unknown_item(rng, unknown, "heldout") for _ in range(n_unknown)]
    rng.shuffle(items)
    out = []
    for i, it in enumerate(items):
        line = {"id": f"heldout-{i:04d}", "kind": it["kind"], "messages": to_messages(rng, it, False),
                "expected": it["expected"], "answer": it["answer"]}
        if "reject" in it:
            line["reject"] = it["reject"]
        out.append(line)
    return out


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--eval-dir", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--per-fact", type=int, default=24)
    args = ap.parse_args()
    products = json.load(open(args.catalog))["products"]
    rng = random.Random(args.seed)
    known = {p["brand"] for p in products}
    train_unknown = unknown_brands(random.Random(args.seed + 2), 600, known)
    held_unknown = unknown_brands(random.Random(args.seed + 3), 60, known | set(train_unknown))
    train = corpus(products, rng, args.per_fact, n_compare=len(products) * 24, n_unknown=len(products) * 10,
                   unknown=train_unknown)
    write_jsonl(args.corpus, train)
    held = heldout(products, random.Random(args.seed + 1), n_compare=40, n_unknown=60, unknown=held_unknown)
    write_jsonl(os.path.join(args.eval_dir, "heldout.jsonl"), held)
    kinds = {}
    for r in held:
        kinds[r["kind"].split("/")[0]] = kinds.get(r["kind"].split("/")[0], 0) + 1
    print(f"corpus: {len(train)} examples -> {args.corpus}; held-out: {len(held)} {kinds}")


if __name__ == "__main__":
    main()
