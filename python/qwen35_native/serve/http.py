"""An OpenAI-compatible HTTP server around ``q35.LLM`` (the standard library's threading HTTP server).

    server = OpenAIServer(llm, host="127.0.0.1", port=8000)   # port 0: any free port (server.port)
    server.serve_forever()                                     # or server.start() for a background thread

Routes: ``GET /health``, ``GET /metrics`` (Prometheus, metrics.py), ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions``, and vLLM's ``POST /tokenize`` and ``/detokenize``. With an API key (``api_key=`` or
the ``QWEN35_API_KEY`` environment variable, as vLLM's ``--api-key``), every ``/v1/`` route needs
``Authorization: Bearer <key>`` (else 401); ``/health`` and ``/metrics`` stay open. Every
request's body is JSON; errors come back as ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status
for bad requests and 500 for the server's failures. Streams are server-sent events (``data: {...}`` lines, ended
by ``data: [DONE]``) on a connection the server closes at the end. Each connection has its own thread; one engine
thread batches all requests (``engine_loop.py``).

Tests: tests/engine/test_serve.py, test_serve_chat.py; tests/parallel/test_llm_tp.py (two ranks).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .api import JSONResponse, OpenAIServing, StreamResponse, as_request_error
from .engine_loop import EngineLoop
from .protocol import RequestError

logger = logging.getLogger("qwen35_native")

MAX_BODY_BYTES = 64 << 20  # images arrive inline as data: URLs


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        logger.info("qwen35_native.serve: %s %s", self.address_string(), format % args)

    def _authorized(self, path: str) -> bool:
        key = self.server.api_key
        if key is None or not path.startswith("/v1/"):
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            return True
        self._send_error(RequestError("a valid API key is needed: send 'Authorization: Bearer <key>'", status=401,
                                      kind="authentication_error"))
        return False

    def do_GET(self) -> None:  # noqa: N802 (the base class's naming)
        path = self.path.split("?", 1)[0]
        if not self._authorized(path):
            return
        if path == "/health":
            self._send(JSONResponse(200, {}))
        elif path == "/metrics":
            data = self.server.api.metrics_text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/models":
            self._send(self.server.api.models())
        else:
            self._send_error(RequestError(f"no route GET {path}", status=404, kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        api = self.server.api
        route = {"/v1/completions": api.completions, "/v1/chat/completions": api.chat, "/tokenize": api.tokenize,
                 "/detokenize": api.detokenize}.get(path)
        if not self._authorized(path):
            self.close_connection = True  # the body was not read
            return
        try:
            body = self._body()
            if route is None:
                raise RequestError(f"no route POST {path}", status=404, kind="not_found_error")
            response = route(body)
        except Exception as e:
            self._send_error(e if isinstance(e, RequestError) else as_request_error("failed", e))
            return
        if isinstance(response, StreamResponse):
            self._stream(response)
        else:
            self._send(response)

    # ------------------------------------------------------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True  # whatever body there is stays unread
            raise RequestError("the request needs a Content-Length header (chunked bodies are not accepted)",
                               status=411) from None
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(f"the body must be at most {MAX_BODY_BYTES} bytes, got {length}", status=413)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def _send(self, response: JSONResponse) -> None:
        data = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        if error.status >= 500:
            logger.error("qwen35_native.serve: %s", error.message)
        self._send(JSONResponse(error.status, error.body()))

    def _stream(self, response: StreamResponse) -> None:
        self.close_connection = True  # the end of the stream is the end of the connection
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in response:
                self._event(json.dumps(chunk, ensure_ascii=False))
            self._event("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            logger.info("qwen35_native.serve: the client closed the stream; its request is cancelled")
        except Exception as e:  # after the headers: report the failure in the stream itself
            error = e if isinstance(e, RequestError) else as_request_error("failed", e)
            try:
                self._event(json.dumps(error.body()))
                self._event("[DONE]")
            except OSError:
                pass
        finally:
            response.close()  # cancels the request unless every chunk went out

    def _event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # the listen backlog: socketserver's 5 makes a burst of clients connecting at once (a benchmark at
    # concurrency 64) fail with "connection reset" where the kernel resets rather than drops an overflowing SYN;
    # uvicorn (vLLM's server) uses 2048
    request_queue_size = 2048
    api: OpenAIServing
    api_key: str | None = None


class OpenAIServer:
    """Serves ``llm`` (a ``q35.LLM`` with a tokenizer) over HTTP until :meth:`shutdown`."""

    def __init__(self, llm, host: str = "127.0.0.1", port: int = 8000, served_model_name: str | None = None,
                 api_key: str | None = None):
        tokenizer = llm.require_tokenizer("the OpenAI server")
        self.model_name = served_model_name or _default_name(llm)
        self.loop = EngineLoop(llm)
        try:
            self.http = _HTTPServer((host, port), _Handler)
        except BaseException:
            self.loop.close()
            raise
        self.http.api = OpenAIServing(self.loop, self.model_name, tokenizer, llm.max_model_len)
        self.http.api_key = api_key if api_key is not None else os.environ.get("QWEN35_API_KEY") or None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.http.server_address[0]

    @property
    def port(self) -> int:
        return self.http.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        self.http.serve_forever()

    def start(self) -> OpenAIServer:
        """Serves from a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="qwen35-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stops accepting requests, fails those still running, and ends the engine thread (not the LLM)."""
        if self._thread is not None:
            self.http.shutdown()
            self._thread.join()
            self._thread = None
        self.http.server_close()
        self.loop.close()

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _default_name(llm) -> str:
    """vLLM's default: the model path as given."""
    path = getattr(llm, "path", None)
    return str(path) if path is not None else "qwen35"
