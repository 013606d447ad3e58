"""Chat templates rendered with jinja2 the way Hugging Face ``apply_chat_template`` (transformers 5.x) renders them,
without importing transformers.

The environment matches HF's: a sandboxed, immutable jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``,
the ``loopcontrols`` extension and a ``{% generation %}`` block (rendered as its body); ``tojson`` is
``json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`` (no HTML escaping);
globals ``raise_exception`` (raises ``jinja2.TemplateError``), ``strftime_now(fmt)``, a restricted ``dict`` and a
``namespace`` that refuses underscore-prefixed names. Inputs are prepared like HF: keys whose value is None are
dropped from each message, everything is rebuilt from plain JSON types, a message's reasoning given as
``reasoning_content``, ``thinking`` or ``reasoning`` is visible under ``reasoning_content`` and ``thinking``, and
the tokenizer's named special tokens (``bos_token``, ``eos_token``, ...) are template variables that explicit
keyword arguments override. Not supported: tools given as Python callables (pass JSON schemas) and
``continue_final_message``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
QWEN3_5_TEMPLATE = TEMPLATE_DIR / "qwen3_5.jinja"  # the Qwen3.5-style template we ship (tiny checkpoints use it)

_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks in HF; here it renders
    its body unchanged, so templates that use it still parse."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class _GuardedNamespace(jinja2.utils.Namespace):
    """A jinja2 namespace whose attribute names may not start with an underscore (sandbox hardening)."""

    def __setitem__(self, name, value):
        _check_public(name)
        super().__setitem__(name, value)


def _check_public(name):
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore-prefixed namespace attributes, "
                                              f"got {name!r}")


def _namespace(*args, **kwargs):
    """The template's ``namespace(...)``: same arguments as ``dict(...)``."""
    attrs = dict(*args, **kwargs)
    for name in attrs:
        _check_public(name)
    return _GuardedNamespace(attrs)


class _TemplateDict:
    """``dict(...)`` and ``dict.fromkeys(...)`` for templates, without exposing the ``dict`` type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached by source text)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(),
                       namespace=_namespace)
    return env.from_string(source)


def _plain(value: Any) -> Any:
    """Rebuilds ``value`` from JSON-like types, so templates never see objects with methods of their own."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:
        return _plain(value.item())  # numpy / torch scalars
    return f"<{type(value).__name__}>"  # media objects and the like: templates only test for their presence


def _prepare_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(f"qwen35_native.chat: messages must be a non-empty list of dicts, got {messages!r}")
    prepared = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"qwen35_native.chat: messages[{i}] must be a dict, got {type(message).__name__}")
        message = _plain({k: v for k, v in message.items() if v is not None})
        reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Any] | None = None,
                         documents: Sequence[Mapping[str, Any]] | None = None, add_generation_prompt: bool = False,
                         special_tokens: Mapping[str, str] | None = None, **kwargs: Any) -> str:
    """Renders one conversation. ``template``: jinja source; ``messages``: OpenAI-style dicts (``content`` a string
    or a list of parts such as ``{"type": "text", "text": ...}`` / ``{"type": "image"}``); ``tools``: JSON schemas;
    ``special_tokens``: the tokenizer's named special tokens; other keyword arguments (``enable_thinking``,
    ``add_vision_id``, ...) become template variables."""
    if tools is not None:
        for i, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                raise TypeError(f"qwen35_native.chat: tools[{i}] must be a JSON schema dict, got "
                                f"{type(tool).__name__} (callables are not converted; pass their schema)")
    if documents is not None and not all(isinstance(d, Mapping) for d in documents):
        raise TypeError("qwen35_native.chat: documents must be a list of dicts with 'title' and 'text' keys")
    variables = {**(special_tokens or {}), **kwargs}
    return compile_template(template).render(
        messages=_prepare_messages(messages), tools=_plain(None if tools is None else list(tools)),
        documents=_plain(None if documents is None else list(documents)), add_generation_prompt=add_generation_prompt,
        **_plain(variables))


def select_template(templates: str | Mapping[str, str], name: str | None = None, has_tools: bool = False) -> str:
    """Picks one template from a checkpoint's templates as HF does: a named one if ``name`` is given, else
    ``tool_use`` when tools are passed and it exists, else ``default``."""
    if isinstance(templates, str):
        return templates
    if name is not None:
        if name not in templates:
            raise ValueError(f"qwen35_native.chat: chat template {name!r} not found; available: {sorted(templates)}")
        return templates[name]
    if has_tools and "tool_use" in templates:
        return templates["tool_use"]
    if "default" in templates:
        return templates["default"]
    raise ValueError(f"qwen35_native.chat: several chat templates and no 'default'; pass one of {sorted(templates)}")


def load_chat_templates(directory: str | Path,
                        tokenizer_config: Mapping[str, Any] | None = None) -> str | dict[str, str] | None:
    """A checkpoint's chat template(s): ``chat_template.jinja`` (plus ``additional_chat_templates/*.jinja``) take
    priority over ``tokenizer_config.json["chat_template"]`` (a string, or a list of {name, template}), as in HF.
    Returns a string, a name -> template dict, or None when there is none."""
    directory = Path(directory)
    templates: dict[str, str] = {}
    if (directory / "chat_template.jinja").is_file():
        templates["default"] = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    extra = directory / "additional_chat_templates"
    if extra.is_dir():
        for path in sorted(extra.glob("*.jinja")):
            templates[path.stem] = path.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    value = (tokenizer_config or {}).get("chat_template")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, Mapping) and {"name", "template"} <= set(t) for t in value):
        return {t["name"]: t["template"] for t in value}
    raise ValueError(f"qwen35_native.chat: tokenizer_config.json chat_template must be a string or a list of "
                     f"{{name, template}} dicts, got {type(value).__name__}")


def default_chat_template() -> str:
    """The Qwen3.5-style template shipped with the package (``chat/templates/qwen3_5.jinja``)."""
    return QWEN3_5_TEMPLATE.read_text(encoding="utf-8")
