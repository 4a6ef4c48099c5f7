"""Tool-using conversations about catalogs: the training corpus and the evaluation sets.

Every conversation is planned (question, tool calls), the calls are run by `aisle catalog call`
against that conversation's catalog (so every tool result is byte for byte what the server
returns), and the answer is written from the results: the model learns to copy values out of
tool results, never to recall them. Training conversations use many catalogs with made-up names
(none of them the shipped or the unseen catalog); evaluation sets use held-out phrasings.

    python scripts/shop/dialogs.py --aisle target/release/aisle --work target/shop --seed 7 \
        --shipped models/shop-tiny/catalog.json --unseen models/shop-tiny/eval/unseen_catalog.json \
        --eval-dir models/shop-tiny/eval --train 90000
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import catalog as catalog_gen  # noqa: E402
import phrasings as ph  # noqa: E402

ERRORS = ["get_product did not answer within 5000 ms", "the catalog is not available right now",
          "search_products did not answer within 5000 ms", "get_product is not available right now"]


# ---- tools -------------------------------------------------------------------------------------
def field_of(fact):
    """The row field a question about `fact` reads."""
    return "warranty_years" if fact == "warranty" else fact


def get_call(name, fact=None):
    """A lookup; with `fact`, only that field is asked for (the call names the attribute, so the
    answer copies the one value the row holds)."""
    args = {"name": name}
    if fact:
        args["fields"] = [field_of(fact)]
    return {"name": "get_product", "arguments": args}


def search_call(query, max_price=None, min_rating=None, in_stock=None, sort=None, limit=None, fields=None):
    """Arguments in the schema's property order (the order the grammar lets calls write)."""
    args = {"query": query}
    for k, v in [("max_price", max_price), ("min_rating", min_rating), ("in_stock", in_stock),
                 ("sort", sort), ("limit", limit), ("fields", fields)]:
        if v is not None:
            args[k] = v
    return {"name": "search_products", "arguments": args}


def run_calls(aisle, catalog_path, calls):
    """Each call's tool-message content, as `aisle catalog call` prints it."""
    lines = "".join(json.dumps(c) + "\n" for c in calls)
    out = subprocess.run([aisle, "catalog", "call", catalog_path], input=lines, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert len(out) == len(calls), f"{len(out)} results for {len(calls)} calls"
    return out


def tool_definitions(aisle, catalog_path):
    return json.loads(subprocess.run([aisle, "catalog", "tools", catalog_path], capture_output=True,
                                     text=True, check=True).stdout)


# ---- answers -----------------------------------------------------------------------------------
def fact_answer(row, fact):
    n = row["name"]
    if fact == "price":
        return f"The {n} costs {row['price']}.", row["price"], []
    if fact == "stock":
        if row["stock"] == "in stock":
            return f"Yes, the {n} is in stock.", "is in stock", ["out of stock"]
        return f"Sorry, the {n} is out of stock right now.", "out of stock", ["is in stock"]
    if fact == "colour":
        return f"The {n} comes in {row['colour']}.", row["colour"], []
    if fact == "rating":
        return f"The {n} is rated {row['rating']} out of 5.", f"{row['rating']} out of 5", []
    if fact == "warranty":
        y = row["warranty_years"]
        return f"The {n} has a {y}-year warranty.", f"{y}-year", []
    return f"The {n} has a {fact} of {row[fact]}.", row[fact], []


SPEC_KEYS = ("id", "name", "category", "price", "stock", "colour", "rating", "warranty_years")


def describe_answer(row):
    specs = ", ".join(f"{k} {v}" for k, v in row.items() if k not in SPEC_KEYS)
    return (f"The {row['name']} costs {row['price']} and is {row['stock']}. It is rated {row['rating']} out of 5, "
            f"comes in {row['colour']} and has a {row['warranty_years']}-year warranty; {specs}."), row["price"], []


def refusal(mention):
    return f"I'm not sure. I can't find the {mention} in our catalog.", "can't find", ["$"]


def error_answer():
    return "Sorry, I can't check that right now. Please try again in a moment.", "can't check", ["$"]


def price_value(row):
    return float(row["price"].lstrip("$"))


def compare_answer(ra, rb, fact):
    a, b = ra["name"], rb["name"]
    if fact == "cheaper":
        w, l = (a, b) if price_value(ra) < price_value(rb) else (b, a)
        return (f"The {a} costs {ra['price']} and the {b} costs {rb['price']}, so the {w} is cheaper.",
                f"the {w} is cheaper", [f"the {l} is cheaper"])
    w, l = (a, b) if float(ra["rating"]) > float(rb["rating"]) else (b, a)
    return (f"The {a} is rated {ra['rating']} and the {b} is rated {rb['rating']}, so the {w} has the better rating.",
            f"the {w} has the better rating", [f"the {l} has the better rating"])


def listing(result, with_rating):
    rows = result["results"]
    items = [f"the {r['name']} ({'rated ' + r['rating'] if with_rating else r['price']})" for r in rows]
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    head = f"I found {result['total']}" + ("" if result["total"] == len(rows) else f". Here are {len(rows)}")
    return f"{head}: {text}.", f"the {rows[0]['name']}", []


ONE = {  # filter kind -> (sentence, value key) for limit-1 searches
    "cheapest": ("The cheapest {k} is the {n} at {v}.", "price"),
    "priciest": ("The most expensive {k} is the {n} at {v}.", "price"),
    "best": ("The best-rated {k} is the {n}, rated {v} out of 5.", "rating"),
    "best_stock": ("The best-rated {k} in stock is the {n}, rated {v} out of 5.", "rating"),
    "cheapest_stock": ("The cheapest {k} in stock is the {n} at {v}.", "price"),
}


def filter_answer(kind, k, result):
    if result["total"] == 0:
        return f"Sorry, I couldn't find a {k} that matches.", "couldn't find", ["$"]
    if kind in ONE:
        sentence, key = ONE[kind]
        r = result["results"][0]
        return sentence.format(k=k, n=r["name"], v=r[key]), f"the {r['name']}", []
    return listing(result, with_rating=kind == "rated")


GREET_ANSWER = "Hello! I can look up prices, stock, ratings and specs of our products. What are you looking for?"
THANKS_ANSWER = "You're welcome! Anything else I can help with?"
BYE_ANSWER = "Goodbye, and happy shopping!"


# ---- planning ----------------------------------------------------------------------------------
class Plan:
    """One conversation before its tools run: context, question, calls, and how to answer."""

    def __init__(self, kind, context, question, calls, answer, system=None):
        self.kind, self.context, self.question, self.calls, self.answer = kind, context, question, calls, answer
        self.system = system


def strip_the(ref):
    return ref[4:] if ref.startswith("the ") else ref


def plan_fact(rng, products, split, how=None):
    p = rng.choice(products)
    fact = rng.choice(["price", "stock", "colour", "rating", "warranty"] + list(p["specs"]))
    mention = ph.mangle(rng, p["name"], how) if how else None
    ref = ph.reference(rng, p, mention)
    q = ph.fill(rng.choice(ph.fact_templates(fact, split)), n=ref, attr=fact)
    mention = strip_the(ref)

    def answer(results):
        row = json.loads(results[0])
        return refusal(mention) if "error" in row else fact_answer(row, fact)
    return Plan("typo/" + how if how else f"fact/{fact}", [], q, [get_call(mention, fact)], answer)


def plan_describe(rng, products, split):
    p = rng.choice(products)
    ref = ph.reference(rng, p)
    q = ph.fill(rng.choice(ph.DESCRIBE), n=ref)

    def answer(results):
        row = json.loads(results[0])
        return refusal(strip_the(ref)) if "error" in row else describe_answer(row)
    return Plan("describe", [], q, [get_call(strip_the(ref))], answer)


def plan_compare(rng, products, split):
    fact = rng.choice(list(ph.COMPARE))
    field = "price" if fact == "cheaper" else "rating"
    while True:
        a, b = rng.sample(products, 2)
        if a["category"] == b["category"] and float(a[field]) != float(b[field]):
            break
    ra, rb = ph.reference(rng, a), ph.reference(rng, b)
    q = ph.fill(rng.choice(ph.COMPARE[fact][0 if split == "train" else 1]), a=ra, b=rb)

    def answer(results):
        rows = [json.loads(r) for r in results]
        for row, ref in zip(rows, (ra, rb)):
            if "error" in row:
                return refusal(strip_the(ref))
        return compare_answer(rows[0], rows[1], fact)
    return Plan(f"compare/{fact}", [], q, [get_call(strip_the(ra), field), get_call(strip_the(rb), field)], answer)


def filter_call(kind, k, p, r):
    """The search for a filter question, asking only for the field its answer quotes."""
    price, rating = ["price"], ["rating"]
    return {
        "under": lambda: search_call(k, max_price=p, sort="price_asc", limit=3, fields=price),
        "cheapest": lambda: search_call(k, sort="price_asc", limit=1, fields=price),
        "priciest": lambda: search_call(k, sort="price_desc", limit=1, fields=price),
        "best": lambda: search_call(k, sort="rating_desc", limit=1, fields=rating),
        "best_stock": lambda: search_call(k, in_stock=True, sort="rating_desc", limit=1, fields=rating),
        "cheapest_stock": lambda: search_call(k, in_stock=True, sort="price_asc", limit=1, fields=price),
        "rated": lambda: search_call(k, min_rating=r, sort="rating_desc", limit=3, fields=rating),
    }[kind]()


def plan_filter(rng, products, split):
    kind = rng.choice(list(ph.FILTER))
    p = rng.choice(products)
    singular, plural = ph.KINDS[p["category"]]
    k = plural if kind in ("under", "rated") and rng.random() < 0.3 else singular
    if rng.random() < 0.1:
        k = k.capitalize()
    same = [float(x["price"]) for x in products if x["category"] == p["category"]]
    price = int(rng.choice(same)) // 10 * 10 + 10 if rng.random() < 0.9 else int(min(same)) // 2
    rating = rng.choice([4.0, 4.5, 4.8])
    q = ph.fill(rng.choice(ph.FILTER[kind][0 if split == "train" else 1]), k=k, p=str(price), r=str(rating))

    def answer(results):
        return filter_answer(kind, k, json.loads(results[0]))
    return Plan(f"filter/{kind}", [], q, [filter_call(kind, k, price, rating)], answer)


def plan_unknown(rng, products, split, brands):
    name = ph.made_up_name(rng, brands, products)
    ref = f"the {name} {rng.choice(ph.UNKNOWN_NOUNS)}" if rng.random() < 0.4 else f"the {name}"
    fact = rng.choice(["price", "stock", "colour", "rating", "warranty", "wattage", "weight", "capacity"])
    q = ph.fill(rng.choice(ph.fact_templates(fact, split)), n=ref, attr=fact)

    def answer(results):
        row = json.loads(results[0])
        if "error" in row:
            return refusal(strip_the(ref))
        return fact_answer(row, fact) if row.get(field_of(fact)) is not None else refusal(strip_the(ref))
    return Plan("unknown", [], q, [get_call(strip_the(ref), fact)], answer)


def plan_followup(rng, products, split, rows_by_name):
    """A first question answered from the catalog, then a follow-up about the same product."""
    p = rng.choice(products)
    row = rows_by_name[p["name"]]
    first, second = rng.sample(list(ph.FOLLOWUP), 2)
    q1 = ph.fill(rng.choice(ph.fact_templates(first, "train")), n=ph.reference(rng, p), attr=first)
    a1 = fact_answer(row, first)[0]
    q2 = ph.fill(rng.choice(ph.FOLLOWUP[second][0 if split == "train" else 1]))
    context = [{"role": "user", "content": q1}, {"role": "assistant", "content": a1}]

    def answer(results):
        return fact_answer(json.loads(results[0]), second)
    return Plan(f"followup/{second}", context, q2, [get_call(row["name"], second)], answer)


def plan_chat(rng, split, rows_by_name, products):
    which = rng.choice(["greet", "thanks", "bye"])
    table = {"greet": (ph.GREET, GREET_ANSWER), "thanks": (ph.THANKS, THANKS_ANSWER), "bye": (ph.BYE, BYE_ANSWER)}
    phr, ans = table[which]
    context = []
    if which != "greet" and rng.random() < 0.6:
        p = rng.choice(products)
        fact = rng.choice(["price", "stock", "colour"])
        q1 = ph.fill(rng.choice(ph.fact_templates(fact, "train")), n=ph.reference(rng, p), attr=fact)
        context = [{"role": "user", "content": q1},
                   {"role": "assistant", "content": fact_answer(rows_by_name[p["name"]], fact)[0]}]
    key = {"greet": "What are you looking for", "thanks": "welcome", "bye": "Goodbye"}[which]
    said = ph.pick(rng, phr, split)
    said = said.lower() if split == "train" and rng.random() < 0.25 else said
    return Plan(f"chat/{which}", context, said, [], lambda _: (ans, key, ["$"]))


TRAIN_MIX = [("fact", 33), ("typo", 16), ("compare", 13), ("filter", 16), ("unknown", 8), ("followup", 8),
             ("describe", 2), ("chat", 3), ("error", 2)]


def plan_one(rng, kind, products, split, brands, rows_by_name):
    if kind == "fact":
        return plan_fact(rng, products, split)
    if kind == "typo":
        return plan_fact(rng, products, split, how=rng.choice(["lower", "upper", "typo", "typo", "short"]))
    if kind == "compare":
        return plan_compare(rng, products, split)
    if kind == "filter":
        return plan_filter(rng, products, split)
    if kind == "unknown":
        return plan_unknown(rng, products, split, brands)
    if kind == "followup":
        return plan_followup(rng, products, split, rows_by_name)
    if kind == "describe":
        return plan_describe(rng, products, split)
    if kind == "chat":
        return plan_chat(rng, split, rows_by_name, products)
    plan = plan_fact(rng, products, split)  # "error": the tool fails; the answer says so
    plan.kind, plan.error = "error", rng.choice(ERRORS)
    plan.answer = lambda _: error_answer()
    return plan


# ---- running plans -----------------------------------------------------------------------------
def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def canonical_rows(aisle, path, products):
    results = run_calls(aisle, path, [get_call(p["name"]) for p in products])
    return {p["name"]: json.loads(r) for p, r in zip(products, results)}


def execute(aisle, path, plans):
    """Run every plan's calls against one catalog (one process); results per plan."""
    flat = [c for p in plans for c in p.calls]
    out = iter(run_calls(aisle, path, flat) if flat else [])
    results = []
    for p in plans:
        rs = [next(out) for _ in p.calls]
        if getattr(p, "error", None):
            rs = [compact({"error": p.error}) for _ in rs]
        results.append(rs)
    return results


def conversation(plan, results):
    msgs = [{"role": "system", "content": plan.system}] if plan.system else []
    msgs += plan.context + [{"role": "user", "content": plan.question}]
    client = list(msgs)
    if plan.calls:
        calls = [{"id": f"call_{i}", "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(plan.calls)]
        msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
        msgs += [{"role": "tool", "tool_call_id": c["id"], "content": r} for c, r in zip(calls, results)]
    answer, expected, reject = plan.answer(results)
    msgs.append({"role": "assistant", "content": answer})
    return client, msgs, answer, expected, reject


def training_plans(rng, products, n, brands, rows):
    kinds = [k for k, w in TRAIN_MIX for _ in range(w)]
    plans = []
    for _ in range(n):
        plan = plan_one(rng, rng.choice(kinds), products, "train", brands, rows)
        plan.question = ph.decorate(rng, plan.question) if not plan.kind.startswith("chat") else plan.question
        if rng.random() < 0.15:
            plan.system = rng.choice(ph.SYSTEMS)
        plans.append(plan)
    return plans


EVAL_MIX = [("typo", 80), ("compare", 60), ("filter", 84), ("unknown", 80), ("followup", 60), ("chat", 24)]


def eval_plans(rng, products, brands, rows):
    """One single-fact question per product, then the other kinds, all in held-out phrasings."""
    plans = []
    for p in products:
        plan = plan_fact(rng, [p], "heldout")
        plans.append(plan)
    for kind, count in EVAL_MIX:
        plans += [plan_one(rng, kind, products, "heldout", brands, rows) for _ in range(count)]
    rng.shuffle(plans)
    return plans


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_eval(aisle, path, catalog_path, products, brands, seed, prefix):
    rng = ph.new_rng(seed)
    rows = canonical_rows(aisle, catalog_path, products)
    plans = eval_plans(rng, products, brands, rows)
    lines = []
    for i, (plan, results) in enumerate(zip(plans, execute(aisle, catalog_path, plans))):
        client, _, answer, expected, reject = conversation(plan, results)
        lines.append({"id": f"{prefix}-{i:04d}", "kind": plan.kind, "messages": client, "expected": expected,
                      "answer": answer, "reject": reject})
    write_jsonl(path, lines)
    kinds = {}
    for line in lines:
        kinds[line["kind"].split("/")[0]] = kinds.get(line["kind"].split("/")[0], 0) + 1
    print(f"{path}: {len(lines)} items {kinds}")


def words_of(products):
    return {w.lower() for p in products for w in p["name"].split()[:2]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aisle", required=True, help="the aisle binary (runs the tool calls)")
    ap.add_argument("--work", required=True, help="folder for the training catalogs and corpus")
    ap.add_argument("--shipped", required=True, help="the shipped catalog.json (held-out questions)")
    ap.add_argument("--unseen", required=True, help="where to write the unseen catalog")
    ap.add_argument("--eval-dir", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train", type=int, default=90000, help="training conversations")
    ap.add_argument("--catalogs", type=int, default=100, help="training catalogs")
    args = ap.parse_args()

    shipped = json.load(open(args.shipped))["products"]
    unseen = catalog_gen.make_catalog(args.seed + 1, fresh=True)
    with open(args.unseen, "w") as f:
        json.dump({"seed": args.seed + 1, "products": unseen}, f, indent=1)
        f.write("\n")
    known = words_of(shipped) | words_of(unseen)
    train_brands = ph.unknown_brands(ph.new_rng(args.seed + 2), 600, known)
    held_brands = ph.unknown_brands(ph.new_rng(args.seed + 3), 80, known | {b.lower() for b in train_brands})

    rng = ph.new_rng(args.seed)
    corpus = []
    per = args.train // args.catalogs
    for i in range(args.catalogs):
        # One catalog in four reuses the shipped brand and series words (with other codes and
        # facts), so their tokens are trained; the rest are made up. No fact is worth recalling.
        fresh = i % 4 != 3
        products = catalog_gen.make_catalog(args.seed * 1000 + i, fresh=fresh, exclude=known)
        path = os.path.join(args.work, "catalogs", f"train-{i:02d}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"seed": args.seed * 1000 + i, "products": products}, f)
        rows = canonical_rows(args.aisle, path, products)
        plans = training_plans(rng, products, per, train_brands, rows)
        for plan, results in zip(plans, execute(args.aisle, path, plans)):
            _, msgs, _, _, _ = conversation(plan, results)
            # Trained: the model's turns after the last question (its calls and its answer).
            last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
            corpus.append({"kind": plan.kind, "messages": msgs, "train_from": last_user + 1})
    rng.shuffle(corpus)
    write_jsonl(os.path.join(args.work, "corpus.jsonl"), corpus)
    with open(os.path.join(args.work, "tools.json"), "w") as f:
        json.dump(tool_definitions(args.aisle, args.shipped), f)
    print(f"corpus: {len(corpus)} conversations over {args.catalogs} catalogs -> {args.work}/corpus.jsonl")
    write_eval(args.aisle, os.path.join(args.eval_dir, "heldout.jsonl"), args.shipped, shipped, held_brands,
               args.seed + 1, "heldout")
    write_eval(args.aisle, os.path.join(args.eval_dir, "unseen.jsonl"), args.unseen, unseen, held_brands,
               args.seed + 4, "unseen")


if __name__ == "__main__":
    main()
