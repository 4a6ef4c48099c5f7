"""What customers say: question phrasings per kind, each split into TRAIN and HELDOUT lists that
never share a sentence, plus how people mangle product names (case, typos, shortened names).

{n} is a product reference ("the Voltrex Pro X3" or "the Voltrex Pro X3 drill"), {attr} an
attribute, {a}/{b} two references, {k} a kind of product as typed ("drill", "kettles"), {p} a
price in dollars, {r} a rating.
"""

import random

SPEC = {
    "train": ["What is the {attr} of {n}?", "What's the {attr} of {n}?", "Can you tell me the {attr} of {n}?",
              "I'd like to know the {attr} of {n}.", "{Attr} of {n}?", "What {attr} does {n} have?",
              "what is {n}'s {attr}", "Could you check the {attr} for {n}?", "{attr} of {n}",
              "need the {attr} of {n}", "Please tell me the {attr} of {n}.", "give me {n}'s {attr}",
              "any idea what the {attr} of {n} is?", "what {attr} is on {n}?"],
    "heldout": ["Do you know the {attr} of {n}?", "Please give me the {attr} for {n}.",
                "Quick question: what's the {attr} on {n}?", "tell me {n}'s {attr}"],
}
SPEC_SPECIFIC = {  # attribute -> (train, heldout)
    "wattage": (["How many watts is {n}?", "How powerful is {n}?", "How many watts does {n} draw?"], ["How many watts does {n} use?"]),
    "weight": (["How heavy is {n}?", "What does {n} weigh?", "how much is {n}'s weight?"], ["How much does {n} weigh?"]),
    "capacity": (["How much does {n} hold?", "How big is {n}'s capacity?", "what can fit in {n}?"], ["What can {n} hold?"]),
    "battery life": (["How long does the battery of {n} last?", "how long does {n} run on a charge?"], ["How long will {n} run on one charge?"]),
    "screen size": (["How big is the screen on {n}?", "how big is {n}'s display?", "display size of {n}?"], ["What size display does {n} have?"]),
    "refresh rate": (["How fast does {n} refresh?", "{n} refresh rate?"], ["What refresh rate can {n} do?"]),
    "heel drop": (["How much drop does {n} have?", "what drop does {n} have?"], ["What's the drop on {n}?"]),
    "battery range": (["How far can {n} go on a charge?", "range of {n}?"], ["What range does {n} get?"]),
}
COMMON = {  # fact -> (train, heldout)
    "price": (["How much is {n}?", "What does {n} cost?", "What is the price of {n}?", "price of {n}?",
               "How much do you charge for {n}?", "What's {n} selling for?", "how much for {n}", "{n} price", "What will {n} set me back?", "cost of {n}?"],
              ["How much would {n} set me back?", "Tell me the price of {n}.", "what's the cost of {n}"]),
    "stock": (["Is {n} in stock?", "Do you have {n} available?", "Can I buy {n} right now?",
               "is {n} available", "Do you have {n} in stock at the moment?", "{n} in stock?", "can I get {n} today?", "have you got {n}?"],
              ["Is {n} available to order today?", "Have you got {n} in stock?", "any stock of {n}"]),
    "colour": (["What colour is {n}?", "What color is {n}?", "Which colour does {n} come in?", "colour of {n}?"],
               ["What color does {n} come in?", "Tell me the colour of {n}."]),
    "rating": (["What is the rating of {n}?", "How is {n} rated?", "What do customers rate {n}?",
                "rating of {n}?", "How many stars does {n} have?", "customer rating of {n}?", "are reviews of {n} good?"],
               ["What's the customer rating for {n}?", "How well reviewed is {n}?"]),
    "warranty": (["How long is the warranty on {n}?", "What warranty does {n} have?",
                  "Does {n} come with a warranty?", "warranty for {n}?", "Is there a guarantee with {n}?",
                  "How many years is {n} covered for?"],
                 ["How many years of warranty do I get with {n}?", "What's the guarantee on {n}?"]),
}
COMPARE = {  # fact -> (train, heldout)
    "cheaper": (["Which is cheaper, {a} or {b}?", "Which costs less: {a} or {b}?", "{a} or {b}, which is cheaper?",
                 "Which one is less expensive, {a} or {b}?", "Which is cheaper between {a} and {b}?",
                 "Of {a} and {b}, which costs less?", "Compare the prices of {a} and {b}.",
                 "I want the cheaper one: {a} or {b}?", "cheaper: {a} or {b}", "Is {a} cheaper than {b}?"],
                ["Between {a} and {b}, which one is less expensive?", "Is {a} or {b} cheaper?",
                 "which costs less, {a} or {b}"]),
    "rating": (["Which has the better rating, {a} or {b}?", "Which is rated higher: {a} or {b}?",
                "{a} or {b}, which has better reviews?", "Which do customers rate higher, {a} or {b}?",
                "Which is better rated between {a} and {b}?", "Of {a} and {b}, which has the higher rating?",
                "Compare the ratings of {a} and {b}.", "Does {a} or {b} have better reviews?", "Is {a} rated higher than {b}?"],
               ["Between {a} and {b}, which one do customers rate higher?", "Is {a} or {b} better rated?",
                "which has better ratings, {a} or {b}"]),
}
DESCRIBE = ["Tell me about {n}.", "Describe {n}.", "What can you tell me about {n}?", "Give me the specs of {n}.",
            "tell me about {n}", "info on {n}"]
# Filters: (train, heldout); each entry is a sentence with {k} and maybe {p}/{r}.
FILTER = {
    "under": (["Do you have a {k} under ${p}?", "any {k} below ${p}?", "I need a {k} for less than ${p}.",
               "show me a {k} under {p} dollars", "{k} under ${p}", "Is there a {k} cheaper than ${p}?",
               "What {k} can I get for under ${p}?"],
              ["I'm looking for a {k} under ${p}.", "got any {k} for less than {p} dollars",
               "Which {k} costs less than ${p}?"]),
    "cheapest": (["What's the cheapest {k}?", "cheapest {k} you have", "What is your least expensive {k}?",
                  "Which {k} is the cheapest?", "lowest price {k}?", "Which {k} is the most affordable?",
                  "cheapest {k} in the shop", "show me the least expensive {k}"],
                 ["What's the most affordable {k}?", "cheapest {k} please", "Show me your cheapest {k}."]),
    "priciest": (["What's the most expensive {k}?", "priciest {k} you sell", "Which {k} costs the most?",
                  "{k} with the top price?", "highest priced {k}", "most expensive {k} you have"],
                 ["What is your most expensive {k}?", "top price {k}?"]),
    "best": (["What's the best-rated {k}?", "best rated {k}?", "Which {k} has the highest rating?",
              "What {k} do customers rate best?", "top rated {k}", "{k} with the best reviews?",
              "{k} with the highest rating"],
             ["Which {k} gets the best reviews?", "highest rated {k} please"]),
    "best_stock": (["What's the best-rated {k} in stock?", "best rated {k} that's in stock",
                    "Which {k} in stock has the highest rating?", "top rated {k} in stock",
                    "highest rated {k} you have in stock"],
                   ["Which {k} that you have in stock is rated best?", "top rated {k} available now"]),
    "cheapest_stock": (["What's the cheapest {k} in stock?", "cheapest {k} you have in stock",
                        "Which {k} in stock costs the least?", "lowest priced {k} in stock?",
                        "cheapest {k} I can buy today"],
                       ["What's the lowest priced {k} available now?", "cheapest {k} that's available"]),
    "rated": (["Show me a {k} rated {r} or higher.", "any {k} with a rating of at least {r}?",
               "{k} rated {r} or more", "{k} with at least {r} stars", "need a {k} rated at least {r}"],
              ["Do you have a {k} rated at least {r}?", "I want a {k} with {r} stars or more."]),
}
FOLLOWUP = {  # fact -> (train, heldout); the product is the one of the previous answer
    "price": (["And how much is it?", "how much does it cost", "What's its price?", "and the price?"],
              ["And what does it cost?", "how much is that one"]),
    "stock": (["Is it in stock?", "and is it available?", "Can I buy it now?", "is that one in stock"],
              ["And is it in stock?", "do you have it in stock"]),
    "colour": (["What colour is it?", "and the colour?", "which color does it come in"],
               ["What color is it?", "and what colour is that"]),
    "rating": (["How is it rated?", "and its rating?", "what do customers rate it"],
               ["What's its rating?", "how well is it reviewed"]),
    "warranty": (["What warranty does it have?", "and the warranty?", "how long is it covered"],
                 ["How long is its warranty?", "is there a warranty on it"]),
}
# Small talk as people type it: many short forms in training (abbreviations, with or without
# punctuation), so a held-out greeting or thanks is near one the model has seen.
GREET = (["Hi!", "Hello", "hey", "Good morning!", "hi there", "Hello, anyone there?", "hey!", "hiya", "yo",
          "Hello there", "good evening", "Good day!", "heya", "hi, hello", "morning!", "Hey, hi"],
         ["Hey there!", "good afternoon"])
THANKS = (["Thanks!", "thank you", "Thanks a lot.", "cheers", "great, thanks", "thanks so much", "ty", "thnx",
           "thanx", "thank you very much", "Many thanks!", "tysm", "thanks!!", "perfect, thank you", "ok thanks",
           "Thanks a bunch"],
          ["Thank you so much!", "thx"])
BYE = (["Bye!", "goodbye", "That's all, bye.", "see ya", "See you later!", "bye bye", "cya", "Good night!",
        "see you soon", "ok bye", "Talk later, bye", "Bye for now."], ["See you!"])
SYSTEMS = ["You are Aisle's shopping assistant.", "You are a helpful shopping assistant. Answer briefly.",
           "You answer questions about products in our store."]
PREFIXES = ["Hi! ", "Hello, ", "Hey, ", "Quick one: ", "Excuse me, ", "Sorry to bother you, "]
SUFFIXES = [" Thanks!", " Thank you.", " Please.", " Cheers."]

# Kinds of product as people type them: category -> (singular, plural).
KINDS = {
    "power drills": ("drill", "drills"), "headphones": ("headphones", "headphones"), "tents": ("tent", "tents"),
    "coffee makers": ("coffee maker", "coffee makers"), "running shoes": ("running shoes", "running shoes"),
    "vacuum cleaners": ("vacuum cleaner", "vacuums"), "blenders": ("blender", "blenders"),
    "backpacks": ("backpack", "backpacks"), "smartwatches": ("smartwatch", "smartwatches"),
    "electric kettles": ("kettle", "kettles"), "monitors": ("monitor", "monitors"),
    "electric bikes": ("e-bike", "e-bikes"),
}

# Made-up brands for questions about products we do not sell; train and held-out disjoint.
UNKNOWN_SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "bel", "dri", "sa", "nu", "qui", "zen", "fa", "hol",
                     "mar", "ost", "pel", "ri", "sto", "vy", "wen", "xa", "gal", "dor"]
UNKNOWN_SERIES = ["Pro", "Max", "Air", "Lite", "Ultra", "Classic", "Sport", "Prime", "One", "Plus"]
UNKNOWN_NOUNS = ["drill", "headphones", "tent", "coffee maker", "blender", "backpack", "monitor", "kettle",
                 "smartwatch", "vacuum cleaner", "e-bike", "running shoes", "toaster", "camera", "laptop"]
CODE_LETTERS = "ABCDEGHKLMNPRSTVXZ"


def fill(template, **kw):
    out = template
    for k, v in kw.items():
        out = out.replace("{" + k + "}", v).replace("{" + k.capitalize() + "}", v[:1].upper() + v[1:])
    # Casual phrasings (written in lower case) stay lower case; the rest start with a capital.
    return out if template[0].islower() or template[0] == "{" else out[0].upper() + out[1:]


def pick(rng, table, split):
    return rng.choice(table[0 if split == "train" else 1])


def spec_templates(attr, split):
    return SPEC[split] + SPEC_SPECIFIC[attr][0 if split == "train" else 1]


def fact_templates(fact, split):
    if fact in COMMON:
        return COMMON[fact][0 if split == "train" else 1]
    return spec_templates(fact, split)


# ---- how people type names ---------------------------------------------------------------------
def typo(rng, word):
    """One slip in a word of letters: swap, drop, double or replace a letter."""
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["swap", "drop", "double", "replace"])
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeiounrst") + word[i + 1:]


def mangle(rng, name, how):
    """The name as a customer types it: `lower`, `upper`, `typo`, `short` (no brand)."""
    words = name.split()
    if how == "lower":
        return name.lower()
    if how == "upper":
        return name.upper()
    if how == "short":
        return " ".join(words[1:])
    letters = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
    if not letters:
        return name.lower()
    i = rng.choice(letters)
    words[i] = typo(rng, words[i])
    out = " ".join(words)
    return out.lower() if rng.random() < 0.5 else out


def reference(rng, p, mention=None):
    """How a question names a product: `the <name>` or `the <name> <noun>`."""
    m = mention or p["name"]
    return f"the {m} {p['noun']}" if rng.random() < 0.3 else f"the {m}"


def unknown_brands(rng, count, exclude):
    out = set()
    while len(out) < count:
        b = "".join(rng.choice(UNKNOWN_SYLLABLES) for _ in range(rng.choice([2, 2, 3]))).capitalize()
        if b.lower() not in exclude:
            out.add(b)
    return sorted(out)


def made_up_name(rng, brands, products):
    """A product we do not sell: an unknown brand, or a real brand and series with a new code."""
    names = {p["name"].lower() for p in products}
    while True:
        code = rng.choice(CODE_LETTERS) + str(rng.randint(1, 99))
        if rng.random() < 0.5:
            name = f"{rng.choice(brands)} {rng.choice(UNKNOWN_SERIES)} {code}"
        else:
            brand, series = rng.choice(products)["name"].split()[:2]
            name = f"{brand} {series} {code}"
        if name.lower() not in names:
            return name


def decorate(rng, question):
    if rng.random() < 0.15:
        question = rng.choice(PREFIXES) + question[0].lower() + question[1:]
    if rng.random() < 0.15:
        question = question + rng.choice(SUFFIXES)
    return question


def new_rng(seed):
    return random.Random(seed)
