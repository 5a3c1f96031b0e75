"""Trim OpenAI's API description (openai/openai-openapi, ``openapi.yaml``) to what the proxy
serves, and write it as JSON next to this script.

Kept: the operations POST /chat/completions, POST /completions, GET /models and
GET /models/{model}; the component schemas they reach through ``$ref`` (the request and response
bodies, the streamed chunk, ``ErrorResponse``, ``Model`` and ``ListModelsResponse`` are added
as roots, since errors and chunks are not all reached from the operations); the responses
component they name. Dropped: every other path and component, and ``x-oaiMeta`` (client code
samples). Nothing kept is edited.

    python tests/e2e/openapi/trim.py /path/to/openai-openapi <commit>

reads ``openapi.yaml`` at ``commit`` with ``git show`` (or the working file when the commit is
``-``) and writes ``openai-openapi.trimmed.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

OPERATIONS = {
    "/chat/completions": ["post"],
    "/completions": ["post"],
    "/models": ["get"],
    "/models/{model}": ["get"],
}
ROOTS = [
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
]
OUT = Path(__file__).with_name("openai-openapi.trimmed.json")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def trim(document: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, methods in OPERATIONS.items():
        ops = {}
        for method in methods:
            op = dict(document["paths"][path][method])
            op.pop("x-oaiMeta", None)
            ops[method] = op
        paths[path] = ops
    kept: dict[str, dict[str, Any]] = {"schemas": {}, "responses": {}}
    todo = _refs(paths) + [f"#/components/schemas/{name}" for name in ROOTS]
    while todo:
        ref = todo.pop()
        _, _, kind, name = ref.split("/")
        if name in kept[kind]:
            continue
        kept[kind][name] = document["components"][kind][name]
        todo += _refs(kept[kind][name])
    info = dict(document["info"])
    info["x-trimmed-from"] = source
    return {
        "openapi": document["openapi"],
        "info": info,
        "servers": document.get("servers", []),
        "paths": paths,
        "components": {kind: dict(sorted(v.items())) for kind, v in kept.items()},
    }


def main() -> None:
    repo, commit = sys.argv[1], sys.argv[2]
    if commit == "-":
        text = (Path(repo) / "openapi.yaml").read_text()
    else:
        text = subprocess.run(
            ["git", "-C", repo, "show", f"{commit}:openapi.yaml"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    source = {
        "repository": "openai/openai-openapi",
        "path": "openapi.yaml",
        "commit": commit,
        "trimmed_by": "tests/e2e/openapi/trim.py",
    }
    trimmed = trim(yaml.safe_load(text), source)
    OUT.write_text(json.dumps(trimmed, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
