"""OpenAI's API description (the trimmed copy in ``openapi/``) as JSON Schemas for tests.

The document is OpenAPI 3.1 but still marks 111 places with OpenAPI 3.0's ``nullable: true``,
which JSON Schema 2020-12 does not know. A validator that ignored it would refuse ``null`` where
the document allows it, and a generator would never send it; so each ``nullable: true`` schema
is rewritten here as ``anyOf: [<the schema>, {"type": "null"}]``, the 3.1 spelling of the same
thing. Everything else is kept as published. Validation is ``jsonschema``'s (draft 2020-12);
generation of valid requests is schemathesis's.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

DOCUMENT = Path(__file__).with_name("openapi") / "openai-openapi.trimmed.json"
_COMPONENTS = "#/components/schemas/"


def spell_nullable(node: Any, *, refs_to: str = _COMPONENTS) -> Any:
    """``node`` with every ``nullable: true`` spelled as JSON Schema does, and its component
    ``$ref``s pointing under ``refs_to``."""
    if isinstance(node, list):
        return [spell_nullable(v, refs_to=refs_to) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: spell_nullable(v, refs_to=refs_to) for k, v in node.items() if k != "nullable"}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace(_COMPONENTS, refs_to)
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


@functools.cache
def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text())  # type: ignore[no-any-return]


@functools.cache
def _defs() -> dict[str, Any]:
    return spell_nullable(document()["components"]["schemas"], refs_to="#/$defs/")  # type: ignore[no-any-return]


def properties(name: str) -> set[str]:
    """The property names component ``name`` declares, through ``allOf`` and ``$ref``."""
    found: set[str] = set()
    todo = [document()["components"]["schemas"][name]]
    while todo:
        node = todo.pop()
        if "$ref" in node:
            todo.append(document()["components"]["schemas"][node["$ref"].split("/")[-1]])
        found |= set(node.get("properties", {}))
        todo += node.get("allOf", [])
    return found


def schema(name: str) -> dict[str, Any]:
    """The component schema ``name`` as a self-contained JSON Schema (draft 2020-12)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": _defs(),
        "$ref": f"#/$defs/{name}",
    }


@functools.cache
def validator(name: str) -> Any:
    root = schema(name)
    cls = jsonschema.validators.validator_for(root)
    cls.check_schema(root)
    return cls(root, format_checker=cls.FORMAT_CHECKER)


def errors(name: str, instance: Any) -> list[jsonschema.ValidationError]:
    """Why ``instance`` is not valid against component ``name`` (nothing if it is)."""
    return list(validator(name).iter_errors(instance))


def completion_chunk_deviation(error: jsonschema.ValidationError) -> bool:
    # The document describes a completions stream as a sequence of CreateCompletionResponse
    # objects, whose finish_reason is not nullable; but every chunk before the last has none
    # yet, and OpenAI itself sends null there (so do vLLM and the simulated engine).
    return list(error.path)[-1:] == ["finish_reason"] and error.instance is None


def check(name: str, instance: Any) -> None:
    """Raise the most relevant ``jsonschema.ValidationError`` unless ``instance`` is valid
    against component ``name``."""
    error = jsonschema.exceptions.best_match(errors(name, instance))
    if error is not None:
        raise error


_REQUESTS = {"/chat/completions": "CreateChatCompletionRequest",
             "/completions": "CreateCompletionRequest"}  # fmt: skip


@functools.cache
def _api(require: tuple[str, ...], pin: tuple[tuple[str, Any], ...]) -> Any:
    import schemathesis  # only the property tests need it, and it is slow to import

    schemas = spell_nullable(document()["components"]["schemas"])
    for name in _REQUESTS.values():
        request = schemas[name]
        # Chat's request is allOf [shared properties, its own object]: narrow the latter.
        target = request["allOf"][-1] if "allOf" in request else request
        fields = target["properties"]
        for field, value in pin:
            if field in fields:
                fields[field] = {"allOf": [fields[field], {"const": value}]}
        wanted = [*require, *(field for field, _ in pin)]
        target["required"] = [*target["required"], *(f for f in wanted if f in fields)]
    spelled = {**document(), "components": {**document()["components"], "schemas": schemas}}
    return schemathesis.openapi.from_dict(spelled)


def request_bodies(
    path: str, require: tuple[str, ...] = (), pin: tuple[tuple[str, Any], ...] = ()
) -> Any:
    """A Hypothesis strategy of request bodies that are valid for ``POST path`` under the
    document (schemathesis's positive mode). ``require``: optional fields every body must
    carry; ``pin``: (field, value) pairs every body carries with that value (the value must be
    one the document allows). Both explore what random draws seldom reach, and still give
    valid bodies only (a subset of them)."""
    return _api(require, pin)[path]["POST"].as_strategy().map(lambda case: case.body)
