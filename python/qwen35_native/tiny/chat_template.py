"""A ChatML chat template in the Qwen3.5 style (MODEL_SPEC §4), written by ``qwen35 make-tiny`` as
``chat_template.jinja``. Written for this project from the description in MODEL_SPEC §4 (the official file was not
available), so it is faithful to the described format, not byte-identical to the release file:

- turns ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; images ``<|vision_start|><|image_pad|><|vision_end|>``,
  videos ``<|vision_start|><|video_pad|><|vision_end|>`` (``Picture n: `` / ``Video n: `` with ``add_vision_id``);
  images are rejected in system messages;
- tools: a system turn starting with ``# Tools`` listing ``<tools>`` (one JSON per line) and the XML call format
  ``<tool_call>\\n<function=NAME>\\n<parameter=ARG>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>``;
- tool results go back as one user turn of ``<tool_response>`` blocks;
- assistant reasoning (``reasoning_content`` or a ``<think>`` block in the content) is kept only for turns after
  the last real user query;
- generation prompt ``<|im_start|>assistant\\n<think>\\n`` (thinking, the default) or with an empty think block
  ``<think>\\n\\n</think>\\n\\n`` when ``enable_thinking=False``.
"""

CHAT_TEMPLATE = r"""{%- set counts = namespace(image=0, video=0) -%}
{%- macro render(content, in_system=false) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is not none -%}
{%- for item in content -%}
{%- if item is string -%}{{- item -}}
{%- elif item.type in ['image', 'image_url'] or 'image' in item or 'image_url' in item -%}
{%- if in_system -%}{{- raise_exception('images are not allowed in system messages') -}}{%- endif -%}
{%- set counts.image = counts.image + 1 -%}
{%- if add_vision_id -%}{{- 'Picture ' ~ counts.image ~ ': ' -}}{%- endif -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif item.type == 'video' or 'video' in item -%}
{%- if in_system -%}{{- raise_exception('videos are not allowed in system messages') -}}{%- endif -%}
{%- set counts.video = counts.video + 1 -%}
{%- if add_vision_id -%}{{- 'Video ' ~ counts.video ~ ': ' -}}{%- endif -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in item -%}{{- item.text -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- set system_text = render(messages[0].content, true) if has_system else '' -%}
{%- if tools -%}
{{- '<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>' -}}
{%- for tool in tools -%}{{- '\n' ~ (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n' -}}
{{- '<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n' -}}
{{- '<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n' -}}
{{- '</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n' -}}
{{- '- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested ' -}}
{{- 'within <tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n' -}}
{{- '- You may provide optional reasoning for your function call in natural language BEFORE the function call, ' -}}
{{- 'but NOT after\n- If there is no function call available, answer the question like normal with your current ' -}}
{{- 'knowledge and do not tell the user about function calls\n</IMPORTANT>' -}}
{%- if system_text -%}{{- '\n\n' ~ system_text -}}{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- elif has_system -%}
{{- '<|im_start|>system\n' ~ system_text ~ '<|im_end|>\n' -}}
{%- endif -%}
{%- set ns = namespace(last_query=-1) -%}
{%- for message in messages -%}
{%- if message.role == 'user' and not (message.content is string and message.content.startswith('<tool_response>')
    and message.content.endswith('</tool_response>')) -%}
{%- set ns.last_query = loop.index0 -%}
{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{%- set content = render(message.content) -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- raise_exception('a system message must come first') -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\n' ~ content ~ '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{%- set reasoning = '' -%}
{%- if message.reasoning_content is string -%}
{%- set reasoning = message.reasoning_content -%}
{%- elif '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}
{%- set content = content.split('</think>')[-1] -%}
{%- endif -%}
{%- set content = content.strip('\n') -%}
{%- if loop.index0 > ns.last_query -%}
{{- '<|im_start|>assistant\n<think>\n' ~ reasoning.strip('\n') ~ '\n</think>\n\n' ~ content -}}
{%- else -%}
{{- '<|im_start|>assistant\n' ~ content -}}
{%- endif -%}
{%- for call in message.tool_calls or [] -%}
{%- set call = call.function if call.function is defined else call -%}
{%- if not loop.first -%}{{- '\n' -}}{%- elif content -%}{{- '\n\n' -}}{%- endif -%}
{{- '<tool_call>\n<function=' ~ call.name ~ '>\n' -}}
{%- if call.arguments is mapping -%}
{%- for name, value in call.arguments.items() -%}
{%- set structured = value is mapping or (value is iterable and value is not string) -%}
{%- set text = value | tojson if structured else value | string -%}
{{- '<parameter=' ~ name ~ '>\n' ~ text ~ '\n</parameter>\n' -}}
{%- endfor -%}
{%- endif -%}
{{- '</function>\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' ~ content ~ '\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- else -%}
{{- raise_exception('unknown message role: ' ~ message.role) -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}
{%- else -%}{{- '<think>\n' -}}{%- endif -%}
{%- endif -%}
"""
