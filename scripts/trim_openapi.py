#!/usr/bin/env python3
"""Cut OpenAI's published API spec down to the operations `aisle serve` implements.

Usage: scripts/trim_openapi.py OPENAPI_YAML COMMIT > tests/openapi/openai-trimmed.yaml
(OPENAPI_YAML: `openapi.yaml` from github.com/openai/openai-openapi at COMMIT; needs PyYAML.)

Keeps POST /chat/completions, POST /completions, GET /models and GET /models/{model} with
every component they reference (transitively), unchanged but for one thing: the two request
bodies' `model` becomes the served name `shop` (the spec allows any string, and generated
names would only ever test the 404 path). tests/e2e_openai.py runs schemathesis against it.
"""
import sys

import yaml

KEEP = {"/chat/completions": ["post"], "/completions": ["post"], "/models": ["get"],
        "/models/{model}": ["get"]}
SERVED = "shop"


def refs(node, out):
    """Every `#/components/...` reference under `node`."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/"):
                out.add(v)
            else:
                refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    commit = sys.argv[2]
    paths = {p: {m: spec["paths"][p][m] for m in ms} for p, ms in KEEP.items()}
    for p in KEEP:
        if "parameters" in spec["paths"][p]:
            paths[p]["parameters"] = spec["paths"][p]["parameters"]
    todo, seen = set(), set()
    refs(paths, todo)
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        refs(spec["components"][section][name], todo)
    components = {}
    for ref in sorted(seen):
        _, _, section, name = ref.split("/", 3)
        components.setdefault(section, {})[name] = spec["components"][section][name]
    components["securitySchemes"] = spec["components"]["securitySchemes"]
    served = {"type": "string", "enum": [SERVED],
              "description": "aisle: the served model's name (the one change to OpenAI's schema)"}
    schemas = components["schemas"]
    schemas["CreateChatCompletionRequest"]["allOf"][1]["properties"]["model"] = served
    schemas["CreateCompletionRequest"]["properties"]["model"] = served
    info = dict(spec["info"])
    info["x-trimmed-from"] = f"github.com/openai/openai-openapi openapi.yaml at {commit} (scripts/trim_openapi.py)"
    out = {"openapi": spec["openapi"], "info": info, "servers": spec["servers"],
           "security": spec["security"], "paths": paths, "components": components}
    yaml.safe_dump(out, sys.stdout, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    main()
