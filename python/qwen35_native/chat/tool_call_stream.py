"""Tool calls streamed as the model writes them (OpenAI's ``tool_calls`` deltas), from Qwen's XML format
(tool_calls.py): a call's first delta carries its ``id`` and function ``name`` (with ``arguments: ""``) as soon as
``<function=NAME>`` is complete; each parameter follows as a fragment of the arguments' JSON once its value is
complete (``{"city": "Paris"`` then ``, "days": 3``), and ``}`` when ``</function>`` arrives. Concatenated, a call's
fragments are ``json.dumps`` of the arguments the whole-text parser gives, values converted by the same rules (the
tool's JSON schema).

A block the whole-text parser would refuse (text between parameters, no ``</tool_call>`` before the reply ended)
may already have been streamed in part; as with vLLM's streaming parsers, what was sent stays sent.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .tool_calls import convert_value, schema_types, trim_value

_FUNCTION_OPEN = re.compile(r"<function=([^>\n]+)>")
_PARAMETER_OPEN = re.compile(r"<parameter=([^>\n]+)>")
# what ends a parameter's value: its closing tag, the next parameter, or the end of the function
_VALUE_END = re.compile(r"</parameter>|<parameter=|</function>")


@dataclass
class _Call:
    name: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    params_sent: int = 0
    closed: bool = False
    arguments: str = ""  # the fragments sent so far, concatenated


class ToolCallStream:
    """Feed it the reply's text from its first ``<tool_call>`` on, as it grows; each feed returns the new
    ``tool_calls`` deltas (``{"index", ...}`` dicts in OpenAI's streaming form)."""

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None):
        self.types = schema_types(tools)
        self.calls: list[_Call] = []
        self.text = ""

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        deltas = []
        for index, (name, params, closed) in enumerate(self._blocks()):
            if index == len(self.calls):
                self.calls.append(_Call(name))
                deltas.append({"index": index, "id": self.calls[index].id, "type": "function",
                               "function": {"name": name, "arguments": ""}})
            call = self.calls[index]
            fragment = ""
            for key, value in params[call.params_sent:]:
                fragment += ("{" if call.params_sent == 0 else ", ") + json.dumps(key, ensure_ascii=False) + ": " + \
                    json.dumps(convert_value(value, self.types.get(name, {}).get(key)), ensure_ascii=False)
                call.params_sent += 1
            if closed and not call.closed:
                fragment += "}" if call.params_sent else "{}"
                call.closed = True
            if fragment:
                call.arguments += fragment
                if deltas and deltas[-1]["index"] == index:  # the call's header went out in this same feed
                    deltas[-1]["function"]["arguments"] += fragment
                else:
                    deltas.append({"index": index, "function": {"arguments": fragment}})
        return deltas

    def _blocks(self):
        """(function name, completed parameters, whether </function> came) of each call begun so far."""
        for block in self.text.split("<tool_call>")[1:]:
            block = block.split("</tool_call>", 1)[0]
            m = _FUNCTION_OPEN.search(block)
            if m is None:
                return
            name = m.group(1).strip()
            body = block[m.end():]
            closed = "</function>" in body
            body = body.split("</function>", 1)[0] + ("</function>" if closed else "")
            params = []
            for p in _PARAMETER_OPEN.finditer(body):
                end = _VALUE_END.search(body, p.end())
                if end is None:
                    break  # the value is still being written
                params.append((p.group(1).strip(), trim_value(body[p.end():end.start()])))
            yield name, params, closed
