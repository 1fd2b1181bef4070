"""Discord's OpenAPI spec as a request validator.

The spec is 1.1 MB; it is parsed once per process and each (method, route) validator is compiled on
first use, so a test session pays for the parse once and for each route it touches once.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from jsonschema.exceptions import relevance
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "discord-api-spec" / "openapi.json"  # vendored: see its README.md
_URI = "urn:discord-openapi"


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # as the spec spells it, e.g. /channels/{channel_id}/messages/{message_id}
    regex: re.Pattern[str]
    literal_segments: int

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(path)
        return m.groupdict() if m else None


def compile_template(method: str, template: str) -> Route:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
    return Route(method.upper(), template, re.compile(pattern), literal)


def match_route(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The most specific route (most literal segments) that matches; `@original` beats `{message_id}`."""
    best: tuple[Route, dict[str, str]] | None = None
    for route in routes:
        if route.method != method:
            continue
        params = route.match(path)
        if params is not None and (best is None or route.literal_segments > best[0].literal_segments):
            best = (route, params)
    return best


class Spec:
    def __init__(self, document: dict[str, Any]) -> None:
        # Discord takes snowflakes as JSON integers too, and discord.py sends new attachments as
        # {"id": 0, ...}; the spec only says "string", which would flag every file upload.
        snowflake = document["components"]["schemas"]["SnowflakeType"]
        document["components"]["schemas"]["SnowflakeType"] = {"anyOf": [snowflake, {"type": "integer", "minimum": 0}]}
        self.document = document
        resource = referencing.Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry = referencing.Registry().with_resource(_URI, resource)
        self.routes = [
            compile_template(method, template)
            for template, ops in document["paths"].items()
            for method in ops
            if method in {"get", "put", "post", "patch", "delete"}
        ]
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator | None] = {}

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        return match_route(self.routes, method.upper(), path)

    def validator(self, method: str, template: str) -> jsonschema.protocols.Validator | None:
        key = (method.upper(), template)
        if key not in self._validators:
            op = self.document["paths"][template][method.lower()]
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                self._validators[key] = None
            else:
                parts = ("paths", template, method.lower(), "requestBody", "content", "application/json", "schema")
                pointer = "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)
                schema = {"$ref": f"{_URI}#/{pointer}"}
                self._validators[key] = jsonschema.Draft202012Validator(schema, registry=self._registry)
        return self._validators[key]

    def validate_object(self, schema: str, value: Any) -> list[str]:
        """Readable problems with `value` as the spec's components/schemas/`schema`; [] when it conforms."""
        key = ("SCHEMA", schema)
        if key not in self._validators:
            ref = {"$ref": f"{_URI}#/components/schemas/{schema}"}
            self._validators[key] = jsonschema.Draft202012Validator(ref, registry=self._registry)
        validator = self._validators[key]
        assert validator is not None
        return [
            f"spec: {'/'.join(str(p) for p in e.absolute_path) or '(object)'}: {e.message}"
            for e in validator.iter_errors(value)
        ]

    def validate(self, method: str, template: str, body: Any) -> list[str]:
        """Readable problems with a JSON body; an empty list when it conforms."""
        validator = self.validator(method, template)
        if validator is None:
            return [] if body is None else [f"{method} {template} takes no JSON body but one was sent"]
        errors = list(validator.iter_errors(body))
        if not errors:
            return []
        err = max(errors, key=relevance)  # best_match would descend into unions blindly
        where = "/".join(str(p) for p in err.absolute_path) or "(body)"
        # anyOf/oneOf unions give one vague top error; show the deepest specific cause instead.
        leaf = err
        while leaf.context:
            leaf = _best_branch_error(leaf.context)
        leaf_where = "/".join(str(p) for p in leaf.absolute_path) or "(body)"
        if leaf is not err:
            return [f"spec: {leaf_where}: {leaf.message} (in {where})"]
        return [f"spec: {where}: {err.message}"]


def _best_branch_error(context: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    """Pick the error from the union branch the body meant, using `type` as the discriminator.

    Discord's unions (callback types, component types) are told apart by a `type` field; branches
    whose `type` does not match are noise.
    """
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for e in context:
        branches.setdefault(e.schema_path[0] if e.schema_path else None, []).append(e)

    def discriminator_mismatch(errs: list[jsonschema.ValidationError]) -> bool:
        return any(
            (list(e.relative_path) == ["type"] and e.validator in ("enum", "const"))
            or (not e.relative_path and e.validator == "type" and e.validator_value == "null")
            for e in errs
        )

    meant = [errs for errs in branches.values() if not discriminator_mismatch(errs)]
    if meant:
        return max(min(meant, key=len), key=relevance)
    return max(context, key=relevance)


@functools.cache
def load_spec(path: str = str(SPEC_PATH)) -> Spec:
    with open(path, encoding="utf-8") as fh:
        return Spec(json.load(fh))
