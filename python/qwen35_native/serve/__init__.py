"""An OpenAI-compatible HTTP server for ``q35.LLM``: ``qwen35 serve --model DIR`` or :class:`OpenAIServer`.

Layers: ``http.py`` (routes, server-sent events) -> ``api.py`` (the endpoints) -> ``protocol.py`` (request bodies
-> SamplingParams) and ``responses.py`` (outputs -> response objects); ``engine_loop.py`` is the one thread that
drives the engine.
"""

from .http import OpenAIServer
from .protocol import RequestError

__all__ = ["OpenAIServer", "RequestError"]
