"""Parsing Qwen's XML tool calls (the qwen3-coder format Qwen3.5 is trained on) into structured calls::

    <tool_call>
    <function=NAME>
    <parameter=ARG>
    VALUE
    </parameter>
    </function>
    </tool_call>

Several calls may follow each other. A parameter value loses one leading and one trailing newline (the template
writes them). Value types: with the tool's JSON schema (``tools=``), a ``string`` parameter stays text and other
types are JSON-decoded (booleans also accept ``True``/``False``); without a schema a value that parses as JSON is
decoded, anything else stays text. A missing ``</parameter>`` before the next ``<parameter=`` or ``</function>`` is
tolerated. A block that does not parse (no ``<function=...>``, text outside the parameters, no ``</tool_call>``)
stays in the answer text unchanged.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A block never contains another opening tag, so an unclosed <tool_call> cannot swallow the next well-formed one.
_BLOCK = re.compile(r"<tool_call>((?:(?!<tool_call>).)*?)</tool_call>", re.DOTALL)
_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*)</function>\s*", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict[str, Any]:
        """OpenAI chat-completions form: arguments as a JSON string."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}

    def to_message(self) -> dict[str, Any]:
        """The form chat templates read back in an assistant message's ``tool_calls`` (arguments as a dict)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def schema_types(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """function name -> {parameter name -> JSON-schema type} from OpenAI-style tool schemas."""
    types: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            continue
        props = (fn.get("parameters") or {}).get("properties") or {}
        types[fn["name"]] = {k: v.get("type") for k, v in props.items() if isinstance(v, Mapping)}
    return types


def trim_value(value: str) -> str:
    """A parameter's text without the one leading and one trailing newline the template writes around it."""
    value = value[1:] if value.startswith("\n") else value
    return value[:-1] if value.endswith("\n") else value


def convert_value(value: str, schema_type: Any) -> Any:
    """A parameter's text as its schema type says (no type: JSON when it parses, else the text)."""
    kinds = set(schema_type) if isinstance(schema_type, list) else {schema_type} if schema_type else set()
    if "string" in kinds and len(kinds) == 1:
        return value
    if "boolean" in kinds and value.strip() in ("True", "False"):
        return value.strip() == "True"
    try:
        return json.loads(value)
    except (json.JSONDecodeError, ValueError):
        return value


def _parse_block(body: str, types: dict[str, dict[str, Any]]) -> ToolCall | None:
    m = _FUNCTION.fullmatch(body)
    if m is None:
        return None
    name, inner = m.group(1).strip(), m.group(2)
    if not name:
        return None
    arguments: dict[str, Any] = {}
    pos = 0
    for p in _PARAMETER.finditer(inner):
        if inner[pos:p.start()].strip():
            return None  # text between parameters: not the format
        value = trim_value(p.group(2))
        key = p.group(1).strip()
        arguments[key] = convert_value(value, types.get(name, {}).get(key))
        pos = p.end()
    if inner[pos:].strip():
        return None
    return ToolCall(name, arguments)


def parse_tool_calls(text: str, tools: Sequence[Mapping[str, Any]] | None = None) -> tuple[str, list[ToolCall]]:
    """``(remaining text, calls)``: every well-formed ``<tool_call>`` block becomes a :class:`ToolCall` and is
    removed from the text (which is then stripped); malformed blocks stay in the text."""
    types = schema_types(tools)
    calls: list[ToolCall] = []
    kept: list[str] = []
    pos = 0
    for m in _BLOCK.finditer(text):
        call = _parse_block(m.group(1), types)
        kept.append(text[pos:m.start()] if call is not None else text[pos:m.end()])
        if call is not None:
            calls.append(call)
        pos = m.end()
    kept.append(text[pos:])
    remaining = "".join(kept)
    return (remaining.strip() if calls else remaining), calls
