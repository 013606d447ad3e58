"""``qwen35 serve``: an OpenAI-compatible HTTP server (``/v1/completions``, ``/v1/chat/completions``).

    qwen35 serve --model DIR [--host 127.0.0.1] [--port 8000] [--served-model-name NAME] [engine flags]

The engine flags are those of ``qwen35 generate``. Requests' unset sampling fields take the checkpoint's
``generation_config.json`` values. Ctrl-C stops the server.

Tests: tests/engine/test_serve_cli.py.
"""

from __future__ import annotations

import argparse
import sys


def add_serve_parser(sub) -> None:
    from .cli_generate import add_engine_args

    p = sub.add_parser("serve", help="serve the OpenAI completions and chat API over HTTP")
    add_engine_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send and responses carry (default: --model as given)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1/ routes (default: $QWEN35_API_KEY, else none)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .cli_generate import load_llm
    from .serve import OpenAIServer

    llm = load_llm(args)
    try:
        server = OpenAIServer(llm, args.host, args.port, args.served_model_name or args.model, api_key=args.api_key)
        print(f"qwen35 serve: {server.model_name} on {server.url} (POST /v1/completions, /v1/chat/completions; "
              f"GET /v1/models, /health)", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("qwen35 serve: stopping", file=sys.stderr, flush=True)
        finally:
            server.shutdown()
    finally:
        llm.shutdown()
    return 0
