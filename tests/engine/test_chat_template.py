"""Chat-template rendering compared with HF transformers' ``apply_chat_template`` on the same files (the tiny
tokenizer + our Qwen3.5-style template, and feature templates that exercise HF's jinja environment), text and token
ids. Code: python/qwen35_native/chat/{template,tokenizer}.py, chat/templates/qwen3_5.jinja."""

import json

import jinja2
import pytest

from qwen35_native.chat import Tokenizer, build_tiny_tokenizer, render_chat_template, write_tokenizer_files

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city — «quoted» & <escaped>?",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                    "detail": {"type": "boolean"}}, "required": ["city"]}}}
SEARCH_TOOL = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "filters": {"type": "object"}}}}}

SYSTEM = {"role": "system", "content": "  You are a careful assistant.\n"}
CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [SYSTEM, {"role": "user", "content": "Hi there"}],
    "multi_turn_reasoning": [
        SYSTEM,
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer", "reasoning_content": "OLD REASONING ONE"},
        {"role": "user", "content": "Second question"},
        {"role": "assistant", "content": "<think>\nOLD REASONING TWO\n</think>\n\nSecond answer"},
        {"role": "user", "content": "Third question"},
    ],
    "tool_loop": [
        SYSTEM,
        {"role": "user", "content": "Weather in Paris and Oslo? Then search."},
        {"role": "assistant", "content": "I will check both.", "reasoning_content": "need two calls",
         "tool_calls": [
             {"type": "function", "function": {"name": "get_weather",
                                               "arguments": {"city": "Paris", "days": 2, "detail": True}}},
             {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "a"},
        {"role": "tool", "content": "{\"temp\": 3}"},
        {"role": "assistant", "content": None, "reasoning": "now search",
         "tool_calls": [{"name": "search", "arguments": {"query": "multi\nline", "filters": {"lang": ["en"]}}}]},
        {"role": "tool", "content": "no results"},
    ],
    "multimodal": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this video?"},
                                     {"type": "video"}, {"type": "image_url", "image_url": {"url": "x.png"}}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [{"type": "text", "text": "Another"}, {"type": "image", "image": "y.png"}]},
    ],
}
TOOLS = {"tool_loop": [WEATHER_TOOL, SEARCH_TOOL]}


def _cases():
    for name in CONVERSATIONS:
        for kwargs in ({"add_generation_prompt": True}, {"add_generation_prompt": True, "enable_thinking": False},
                       {"add_generation_prompt": False}):
            yield pytest.param(name, kwargs, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in kwargs.items())}")
    yield pytest.param("multimodal", {"add_generation_prompt": True, "add_vision_id": True}, id="multimodal-vision-id")
    yield pytest.param("system_user", {"add_generation_prompt": True, "tools": [WEATHER_TOOL]}, id="tools-no-calls")


@pytest.mark.parametrize("name,kwargs", list(_cases()))
def test_matches_hf_apply_chat_template(tokenizer, hf_tokenizer, name, kwargs):
    messages = CONVERSATIONS[name]
    kwargs = {"tools": TOOLS.get(name), **kwargs}
    ours = tokenizer.apply_chat_template(messages, **kwargs)
    theirs = hf_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    assert ours == theirs
    ids = hf_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs)
    assert tokenizer.apply_chat_template(messages, tokenize=True, **kwargs) == list(ids)


def test_qwen_format_details(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATIONS["multi_turn_reasoning"], add_generation_prompt=True)
    assert "OLD REASONING" not in text  # reasoning before the last user query is not sent back
    assert "<|im_start|>assistant\nSecond answer<|im_end|>" in text
    assert text.startswith("<|im_start|>system\nYou are a careful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nThird question<|im_end|>\n<|im_start|>assistant\n<think>\n")
    off = tokenizer.apply_chat_template(CONVERSATIONS["user_only"], add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    loop = tokenizer.apply_chat_template(CONVERSATIONS["tool_loop"], tools=TOOLS["tool_loop"],
                                         add_generation_prompt=True)
    # the tools section opens the system message; the system content follows it
    assert loop.startswith("<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
                           + json.dumps(WEATHER_TOOL, ensure_ascii=False) + "\n")
    assert "</IMPORTANT>\n\nYou are a careful assistant.<|im_end|>\n" in loop
    # reasoning after the last real query is kept; tool calls in the XML format; tool results grouped in one turn
    assert ("<|im_start|>assistant\n<think>\nneed two calls\n</think>\n\nI will check both.\n\n<tool_call>\n"
            "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n"
            "<parameter=detail>\ntrue\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_weather>\n"
            "<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call><|im_end|>\n") in loop
    assert ("<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n{\"temp\": 3}\n"
            "</tool_response><|im_end|>\n") in loop
    assert "<think>\nnow search\n</think>\n\n<tool_call>\n<function=search>" in loop
    mm = tokenizer.apply_chat_template(CONVERSATIONS["multimodal"], add_vision_id=True)
    assert ("Picture 1: <|vision_start|><|image_pad|><|vision_end|>And this video?Video 1: <|vision_start|>"
            "<|video_pad|><|vision_end|>Picture 2: ") in mm and "AnotherPicture 3: " in mm


@pytest.mark.parametrize("messages,message", [
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "late"}], "system message must be the first"),
    ([{"role": "system", "content": "only"}], "No user query"),
    ([{"role": "user", "content": "<tool_response>\nx\n</tool_response>"}], "No user query"),
    ([{"role": "system", "content": [{"type": "image"}]}, {"role": "user", "content": "a"}], "cannot contain images"),
    ([{"role": "narrator", "content": "a"}, {"role": "user", "content": "b"}], "Unexpected message role"),
])
def test_template_errors_match_hf(tokenizer, hf_tokenizer, messages, message):
    with pytest.raises(jinja2.TemplateError, match=message):
        tokenizer.apply_chat_template(messages)
    with pytest.raises(jinja2.TemplateError, match=message):
        hf_tokenizer.apply_chat_template(messages, tokenize=False)


FEATURES = """{{ bos_token }}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}
{% set ns = namespace(n=0) %}{% for part in m.content.split(' ') %}{% set ns.n = ns.n + 1 %}{% if ns.n > 3 %}\
{% break %}{% endif %}[{{ part }}]{% endfor %}
    {{ m | tojson }}|{{ m | tojson(indent=2, sort_keys=true) }}|{{ dict(a=1, b=m.role) | tojson(separators=(',',':')) }}
{% generation %}{{ m.reasoning_content | default('-') }}/{{ m.thinking | default('-') }}{% endgeneration %}
{% endfor %}{{ documents | tojson }}{{ custom_flag }}{{ strftime_now('%Y') }}{{ eos_token }}{{ pad_token }}
{% if add_generation_prompt %}GEN{% endif %}"""


def test_hf_environment_features_match(tokenizer, hf_tokenizer):
    messages = [{"role": "user", "content": "one two three four five", "extra": None},
                {"role": "skip", "content": "x"},
                {"role": "assistant", "content": "ünï <b> & 'q'", "reasoning": "r1", "name": None}]
    kwargs = dict(documents=[{"title": "T", "text": "body"}], custom_flag=[1, {"k": None}], add_generation_prompt=True,
                  bos_token="<BOS>")
    ours = tokenizer.apply_chat_template(messages, chat_template=FEATURES, **kwargs)
    theirs = hf_tokenizer.apply_chat_template(messages, chat_template=FEATURES, tokenize=False, **kwargs)
    assert ours == theirs
    assert "<BOS>[one][two][three] " in ours and '"extra"' not in ours and "r1/r1" in ours and "<BOS>" in ours


def test_namespace_refuses_private_names(tokenizer, hf_tokenizer):
    template = "{% set ns = namespace(_x=1) %}{{ ns._x }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        tokenizer.apply_chat_template([{"role": "user", "content": "a"}], chat_template=template)
    with pytest.raises(jinja2.exceptions.SecurityError):
        hf_tokenizer.apply_chat_template([{"role": "user", "content": "a"}], chat_template=template, tokenize=False)
    with pytest.raises(jinja2.exceptions.SecurityError):  # the sandbox blocks attribute escapes
        render_chat_template("{{ messages.__class__.__mro__ }}", [{"role": "user", "content": "a"}])


def test_templates_from_tokenizer_config(tmp_path, hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    tok = build_tiny_tokenizer(400)
    write_tokenizer_files(tmp_path, tok)
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": "D:{{ messages[0].content }}"},
                               {"name": "tool_use", "template": "T:{{ tools | length }}"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = Tokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = [{"role": "user", "content": "hey"}]
    for kwargs in ({}, {"tools": [WEATHER_TOOL]}, {"chat_template": "tool_use", "tools": []}):
        assert ours.apply_chat_template(msgs, **kwargs) == theirs.apply_chat_template(msgs, tokenize=False, **kwargs)
    assert ours.apply_chat_template(msgs) == "D:hey"
    config["chat_template"] = "S:{{ messages | length }}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(msgs) == "S:1"


def test_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load"):
        Tokenizer.from_pretrained(tmp_path)
    write_tokenizer_files(tmp_path, build_tiny_tokenizer(400))
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer.from_pretrained(tmp_path).apply_chat_template([{"role": "user", "content": "a"}])


def test_tokenizer_basics(tokenizer, hf_tokenizer):
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == tokenizer.token_to_id("<|endoftext|>")
    assert tokenizer.vocab_size == len(hf_tokenizer) == 448 + 33  # BPE ids, then Qwen3.5's added tokens
    text = "Hi <|im_start|>user\nünï 123 <think>x</think><|im_end|>"
    assert tokenizer.encode(text) == hf_tokenizer.encode(text)
    ids = tokenizer.encode(text)
    expected = "Hi user\nünï 123 <think>x</think>"
    assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True) == expected
    assert tokenizer.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(ids) == text
