"""Forced tool calls: ``tool_choice`` "required" or ``{"type": "function", "function": {"name": NAME}}``.

As vLLM does, a forced choice becomes a JSON-schema constraint on the answer (structured outputs; the reasoning of a
reply that starts in a think block stays free, the grammar applies after ``</think>``), and the answer is parsed as
JSON into the calls:

- named: the answer is the function's arguments, an object of its ``parameters`` schema; one call, and the finish
  reason stays "stop" (OpenAI's and vLLM's answer to a named choice);
- "required": the answer is a list of at least one ``{"name": ..., "parameters": {...}}``, each item one of the
  tools with its own schema; finish reason "tool_calls".

The tools stay in the prompt. The model is trained to write its calls as XML (chat/tool_calls.py); the grammar
makes it write them as JSON instead. An answer that is not complete JSON (the length limit hit) stays the answer text,
with no calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..chat.tool_calls import ToolCall
from ..engine.structured import StructuredOutputs

ANY_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class ForcedTools:
    name: str | None  # the named function, or None for "required" (any of the tools, one call or more)
    tools: tuple  # the request's tools (OpenAI form)

    def structured_outputs(self) -> StructuredOutputs:
        params = {t["function"]["name"]: t["function"].get("parameters") or ANY_OBJECT for t in self.tools}
        if self.name is not None:
            return StructuredOutputs(json=params[self.name])
        items = [{"type": "object", "properties": {"name": {"type": "string", "enum": [name]}, "parameters": schema},
                  "required": ["name", "parameters"]} for name, schema in params.items()]
        return StructuredOutputs(json={"type": "array", "minItems": 1, "items": {"anyOf": items}})

    def calls(self, answer: str) -> list[ToolCall] | None:
        """The calls in a constrained answer; None when it is not complete JSON of the expected form."""
        try:
            value = json.loads(answer)
        except json.JSONDecodeError:
            return None
        if self.name is not None:
            return [ToolCall(self.name, value)] if isinstance(value, dict) else None
        if not isinstance(value, list) or not value or not all(
                isinstance(v, dict) and isinstance(v.get("name"), str) and isinstance(v.get("parameters"), dict)
                for v in value):
            return None
        return [ToolCall(v["name"], v["parameters"]) for v in value]


def forced_tools(choice: Any, tools: list | None) -> ForcedTools | None:
    """The forced choice of a request's ``tool_choice`` (None for "auto", "none" or unset); a ValueError that says
    what is expected when it is malformed, names no tool or there are none."""
    if choice in (None, "auto", "none"):
        return None
    if choice != "required":
        fn = choice.get("function") if isinstance(choice, Mapping) and choice.get("type") == "function" else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str):
            raise ValueError("'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                             f"\"function\": {{\"name\": ...}}}}, got {choice!r}"[:300])
    if not tools:
        raise ValueError(f"'tool_choice' {json.dumps(choice)[:100]} needs 'tools'")
    if choice == "required":
        return ForcedTools(None, tuple(tools))
    if name not in [t["function"]["name"] for t in tools]:
        raise ValueError(f"'tool_choice' names the function {name!r}, which is not in 'tools'")
    return ForcedTools(name, tuple(tools))


def apply_forced(reply, forced: ForcedTools) -> None:
    """Turns a constrained reply's answer (a ChatCompletion parsed without tools) into its calls, in place."""
    calls = forced.calls(reply.text)
    if calls is not None:
        reply.tool_calls, reply.text = calls, ""
