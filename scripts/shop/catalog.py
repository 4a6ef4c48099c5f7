"""Synthetic product catalog for the shop-tiny model (deterministic for a given seed).

A few hundred products across twelve categories, each with brand, name, price, colour, rating,
warranty, stock status and two category-specific measurements (wattage, battery life, capacity,
weight, screen size, ...). Product names are brand + series + model code, unique in the catalog.

    python scripts/shop/catalog.py --seed 7 --out models/shop-tiny/catalog.json
"""

import argparse
import json
import random

# category -> (singular noun, brands, series words, [(attribute, unit, lo, hi, step)])
# Measurements are drawn on a grid (lo..hi by step) so values look like real spec sheets.
CATEGORIES = {
    "power drills": (
        "drill",
        ["Voltrex", "Torqa", "Bramwell", "Ironhand"],
        ["Pro", "Max", "Core", "Force", "Titan", "Edge"],
        [("wattage", "W", 400, 1200, 50), ("weight", "kg", 1.2, 3.4, 0.1)],
    ),
    "headphones": (
        "headphones",
        ["Sonara", "Auralis", "Quietwave", "Beatline"],
        ["Studio", "Air", "Pulse", "Echo", "Nova", "Drift"],
        [("battery life", "hours", 12, 60, 2), ("weight", "g", 180, 340, 5)],
    ),
    "tents": (
        "tent",
        ["Ridgeway", "Nomada", "Summitline", "Campfold"],
        ["Trail", "Basecamp", "Ranger", "Horizon", "Alpine", "Meadow"],
        [("capacity", "persons", 1, 8, 1), ("weight", "kg", 1.1, 9.5, 0.1)],
    ),
    "coffee makers": (
        "coffee maker",
        ["Brewmont", "Caffio", "Morningstar", "Roastwell"],
        ["Classic", "Barista", "Aroma", "Crema", "Daybreak", "Velvet"],
        [("capacity", "cups", 4, 14, 1), ("wattage", "W", 600, 1600, 50)],
    ),
    "running shoes": (
        "running shoes",
        ["Stridex", "Fleetfoot", "Paceline", "Kinetra"],
        ["Glide", "Sprint", "Tempo", "Cloud", "Rocket", "Flow"],
        [("weight", "g", 180, 340, 5), ("heel drop", "mm", 0, 12, 1)],
    ),
    "vacuum cleaners": (
        "vacuum cleaner",
        ["Dustra", "Cyclonix", "Hoverly", "Cleanfield"],
        ["Turbo", "Swift", "Orbit", "Storm", "Lite", "Prime"],
        [("wattage", "W", 300, 2000, 50), ("capacity", "L", 0.4, 3.0, 0.1)],
    ),
    "blenders": (
        "blender",
        ["Whirlo", "Nutriblend", "Vortix", "Kitchenova"],
        ["Smooth", "Power", "Fresh", "Crush", "Silk", "Zest"],
        [("wattage", "W", 300, 1500, 50), ("capacity", "L", 0.5, 2.5, 0.1)],
    ),
    "backpacks": (
        "backpack",
        ["Trekwise", "Packmule", "Urbanroam", "Highpath"],
        ["Daypack", "Voyager", "Summit", "Commuter", "Scout", "Atlas"],
        [("capacity", "L", 15, 75, 5), ("weight", "kg", 0.4, 2.4, 0.1)],
    ),
    "smartwatches": (
        "smartwatch",
        ["Chronex", "Pulsewear", "Tickwell", "Orbita"],
        ["Active", "Sport", "Vital", "Lumen", "Fit", "Sense"],
        [("battery life", "days", 1, 21, 1), ("screen size", "inches", 1.2, 2.0, 0.1)],
    ),
    "electric kettles": (
        "electric kettle",
        ["Boilright", "Steamly", "Kettleworks", "Hearthstone"],
        ["Rapid", "Glass", "Steel", "Tempo", "Pure", "Quick"],
        [("capacity", "L", 0.8, 2.0, 0.1), ("wattage", "W", 1000, 3000, 100)],
    ),
    "monitors": (
        "monitor",
        ["Viewtek", "Pixelon", "Clarivue", "Lumora"],
        ["Ultra", "Vision", "Crisp", "Panorama", "Focus", "Prism"],
        [("screen size", "inches", 21, 34, 1), ("refresh rate", "Hz", 60, 240, 15)],
    ),
    "electric bikes": (
        "e-bike",
        ["Pedalon", "Voltcycle", "Cruzio", "Rideon"],
        ["Metro", "Canyon", "Coast", "Commute", "Ridge", "Breeze"],
        [("battery range", "km", 30, 150, 5), ("weight", "kg", 15, 32, 1)],
    ),
}

COLOURS = ["black", "white", "silver", "red", "blue", "green", "grey", "orange", "yellow", "navy"]
# Model codes: a letter and a digit or two (kept short so names stay a handful of tokens).
CODE_LETTERS = "ABCDEGHKLMNPRSTVXZ"
# Price bands per category (dollars): lo, hi.
PRICES = {
    "power drills": (49, 349), "headphones": (29, 449), "tents": (79, 799),
    "coffee makers": (39, 699), "running shoes": (59, 229), "vacuum cleaners": (89, 899),
    "blenders": (29, 499), "backpacks": (29, 299), "smartwatches": (79, 799),
    "electric kettles": (19, 149), "monitors": (119, 1299), "electric bikes": (799, 3999),
}
PER_CATEGORY = 25


def grid_value(rng, lo, hi, step):
    n = int(round((hi - lo) / step))
    v = lo + step * rng.randint(0, n)
    return int(round(v)) if isinstance(step, int) else round(v, 1)


def fmt_number(v):
    return str(v) if isinstance(v, int) else f"{v:.1f}"


def price(rng, lo, hi):
    whole = rng.randint(lo, hi)
    return f"{whole}.{rng.choice(['99', '95', '49', '00'])}"


# Made-up names for catalogs with fresh brands (`--fresh-names`): the training catalogs and the
# unseen evaluation catalog draw brand and series names from syllables, so no name is worth
# memorising and the model must read every fact from the tools' results.
SYLLABLES = ["ba", "ko", "ri", "ven", "tal", "mo", "sen", "dra", "lu", "pex", "quo", "zir", "fen", "gar",
             "hol", "ix", "jun", "kra", "lem", "nor", "ost", "pry", "sol", "tek", "ur", "vol", "wyn", "yar",
             "an", "bel", "cor", "dun", "el", "fir", "gla", "hin", "is", "jor", "kel", "lin", "mar", "nes",
             "or", "pol", "ran", "ste", "tor", "ul", "vi", "wen", "xa", "zen"]


def fresh_word(rng, parts):
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def fresh_names(rng, exclude):
    """Four brands and six series words per category, none in `exclude` (lower case)."""
    out = {}
    for category in CATEGORIES:
        brands, series = [], []
        while len(brands) < 4:
            w = fresh_word(rng, rng.choice([2, 3]))
            if w.lower() not in exclude and w not in brands:
                brands.append(w)
        while len(series) < 6:
            w = fresh_word(rng, rng.choice([1, 2]))
            if len(w) > 2 and w.lower() not in exclude and w not in series:
                series.append(w)
        out[category] = (brands, series)
    return out


def make_product(rng, category, taken, names=None):
    noun, brands, series, measures = CATEGORIES[category]
    if names:
        brands, series = names[category]
    while True:
        code = rng.choice(CODE_LETTERS) + str(rng.randint(1, 99))
        name = f"{rng.choice(brands)} {rng.choice(series)} {code}"
        if name not in taken:
            taken.add(name)
            break
    specs = {}
    for attr, unit, lo, hi, step in measures:
        specs[attr] = {"value": fmt_number(grid_value(rng, lo, hi, step)), "unit": unit}
    return {
        "name": name,
        "brand": name.split()[0],
        "category": category,
        "noun": noun,
        "price": price(rng, *PRICES[category]),
        "colour": rng.choice(COLOURS),
        "rating": f"{rng.randint(30, 50) / 10:.1f}",
        "warranty_years": rng.choice([1, 1, 2, 2, 3, 5]),
        "in_stock": rng.random() < 0.75,
        "specs": specs,
    }


def fixed_words():
    """Every brand and series word of the fixed (shipped) catalog, lower case."""
    return {w.lower() for _, brands, series, _ in CATEGORIES.values() for w in brands + series}


def make_catalog(seed, fresh=False, exclude=()):
    rng = random.Random(seed)
    names = fresh_names(rng, fixed_words() | set(exclude)) if fresh else None
    taken, products = set(), []
    for category in CATEGORIES:
        for _ in range(PER_CATEGORY):
            products.append(make_product(rng, category, taken, names))
    for i, p in enumerate(products):
        p["sku"] = f"SKU-{1000 + i}"
    return products


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fresh-names", action="store_true", help="brands and series made up from syllables")
    args = ap.parse_args()
    products = make_catalog(args.seed, fresh=args.fresh_names)
    with open(args.out, "w") as f:
        json.dump({"seed": args.seed, "products": products}, f, indent=1)
        f.write("\n")
    print(f"{len(products)} products in {len(CATEGORIES)} categories -> {args.out}")


if __name__ == "__main__":
    main()
