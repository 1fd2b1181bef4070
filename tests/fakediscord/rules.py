"""Discord's limits that the OpenAPI spec cannot express (or expresses only per field)."""

from __future__ import annotations

from typing import Any

IS_COMPONENTS_V2 = 1 << 15
EPHEMERAL = 1 << 6
LOADING = 1 << 7

_BUTTON, _ACTION_ROW, _TEXT_INPUT, _LABEL = 2, 1, 4, 18
_SELECTS = {3, 5, 6, 7, 8}


def _walk(components: list[dict[str, Any]]):
    for c in components or []:
        yield c
        yield from _walk(c.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(c.get(key), dict):
                yield from _walk([c[key]])


def check_message(payload: dict[str, Any] | None, *, sizes: list[int] = (), size_limit: int) -> list[str]:
    """Problems with a message create/edit body (channel message, webhook, or callback `data`)."""
    problems: list[str] = []
    if not payload:
        payload = {}
    content = payload.get("content")
    if isinstance(content, str) and len(content) > 2000:
        problems.append(f"content is {len(content)} characters (limit 2000)")

    embeds = payload.get("embeds") or []
    if len(embeds) > 10:
        problems.append(f"{len(embeds)} embeds (limit 10)")
    total = 0
    for i, e in enumerate(embeds):
        if not isinstance(e, dict):
            continue
        parts = [
            e.get("title"),
            e.get("description"),
            (e.get("footer") or {}).get("text"),
            (e.get("author") or {}).get("name"),
        ]
        for f in e.get("fields") or []:
            parts += [f.get("name"), f.get("value")]
        total += sum(len(p) for p in parts if isinstance(p, str))
        if len(e.get("fields") or []) > 25:
            problems.append(f"embed {i} has {len(e['fields'])} fields (limit 25)")
    if total > 6000:
        problems.append(f"embeds hold {total} characters in total (limit 6000)")

    components = payload.get("components") or []
    flags = payload.get("flags") or 0
    if not flags & IS_COMPONENTS_V2:
        if len(components) > 5:
            problems.append(f"{len(components)} action rows (limit 5)")
        for r, row in enumerate(components):
            if row.get("type") != _ACTION_ROW:
                problems.append(f"top-level component {r} is type {row.get('type')}, not an action row")
                continue
            inner = row.get("components") or []
            buttons = [c for c in inner if c.get("type") == _BUTTON]
            selects = [c for c in inner if c.get("type") in _SELECTS]
            if len(buttons) > 5:
                problems.append(f"action row {r} has {len(buttons)} buttons (limit 5)")
            if selects and len(inner) > 1:
                problems.append(f"action row {r} mixes a select menu with other components")
            if not inner:
                problems.append(f"action row {r} is empty")
    problems += _check_components(components)

    for i, size in enumerate(sizes):
        if size > size_limit:
            problems.append(f"file {i} is {size} bytes (attachment limit {size_limit})")
    return problems


def _check_components(components: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for c in _walk(components):
        cid = c.get("custom_id")
        ctype = c.get("type")
        if cid is not None:
            if len(cid) > 100:
                problems.append(f"custom_id {cid[:30]!r}... is {len(cid)} characters (limit 100)")
            if cid in seen:
                problems.append(f"custom_id {cid!r} is used twice in one message")
            seen.add(cid)
        if ctype == _BUTTON:
            label = c.get("label")
            if isinstance(label, str) and len(label) > 80:
                problems.append(f"button label {label[:30]!r}... is {len(label)} characters (limit 80)")
            style = c.get("style")
            if style == 5 and not c.get("url"):
                problems.append("link button without url")
            if style not in (5, 6) and not cid:
                problems.append(f"button {label!r} has no custom_id")
            if not label and not c.get("emoji") and style != 6:
                problems.append("button has neither label nor emoji")
        if ctype in _SELECTS:
            if ctype == 3 and len(c.get("options") or []) > 25:
                problems.append(f"select {cid!r} has {len(c['options'])} options (limit 25)")
            placeholder = c.get("placeholder")
            if isinstance(placeholder, str) and len(placeholder) > 150:
                problems.append(f"select {cid!r} placeholder is {len(placeholder)} characters (limit 150)")
    return problems


def check_modal(data: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    title = data.get("title") or ""
    if len(title) > 45:
        problems.append(f"modal title is {len(title)} characters (limit 45)")
    cid = data.get("custom_id") or ""
    if len(cid) > 100:
        problems.append(f"modal custom_id is {len(cid)} characters (limit 100)")
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        problems.append(f"modal has {len(components)} top-level components (must be 1-5)")
    for c in _walk(components):
        if c.get("type") == _TEXT_INPUT and len(c.get("label") or "") > 45:
            problems.append(f"text input label {c['label'][:30]!r} is over 45 characters")
        if c.get("type") == _LABEL and len(c.get("label") or "") > 45:
            problems.append(f"label {c['label'][:30]!r} is over 45 characters")
    problems += _check_components(components)
    return problems


def check_autocomplete(data: dict[str, Any]) -> list[str]:
    choices = data.get("choices") or []
    problems = [f"{len(choices)} autocomplete choices (limit 25)"] if len(choices) > 25 else []
    for ch in choices:
        if len(str(ch.get("name", ""))) > 100:
            problems.append(f"autocomplete choice name {ch['name'][:30]!r} is over 100 characters")
    return problems
