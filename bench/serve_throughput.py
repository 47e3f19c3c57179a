"""Serving throughput: ``hwkit serve`` streamed over loopback, one client vs many, per runtime.

Each row is (label, model source, runtime). For each, the real server runs as a subprocess
(``hwkit serve`` on 127.0.0.1, its plan on this machine's hardware) and an asyncio client
streams chat completions with httpx, greedy, over a fixed prompt set and ``max_tokens``:

* single stream: time to first token (request sent -> first content chunk, median) and
  decode tokens/s (tokens after the first / time from first to last chunk, median);
* aggregate tokens/s with 1 client and with ``--clients`` clients, each sending its
  requests back to back (all completion tokens / wall time), and their ratio.

Completion tokens are the server's own counts (``stream_options.include_usage``). A row
whose runtime is not registered, whose model does not resolve, or whose plan picks another
runtime is skipped with the reason.

    python bench/serve_throughput.py                   # every row, 8 clients vs 1
    python bench/serve_throughput.py --quick           # a smoke run: 16 tokens, 1 round
    python bench/serve_throughput.py --rows transformers-fp32,llama.cpp-q8_0

GGUF rows (q8_0, q4_k_m: ``hwkit export gguf``) and OpenVINO rows (``hwkit export openvino
--kv-cache``) use hwkit's own exports of SmolLM2, made once under the cache root. For the
llama.cpp rows, llama-cpp-python is also called directly on the same file (single stream),
and the table gives hwkit's decode rate over it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works, step by step.",
    "Describe a walk through a busy market in the morning.",
    "Give ten tips for learning to cook at home, with a sentence on each.",
    "Explain the water cycle to a ten-year-old.",
    "Write a letter to a friend about a trip to the mountains.",
    "List the planets of the solar system and one fact about each.",
    "Describe how bread is made, from flour to loaf.",
]


@dataclass(frozen=True)
class Row:
    """What one line of the table measures: a model source served by one runtime."""

    label: str
    source: Callable[[], str]  # a model name, HF directory, GGUF file or OpenVINO IR
    runtime: str  # the inference runtime the plan must pick
    dtype: str | None = None  # ``hwkit serve --dtype`` (None: the plan's)


def _smollm2_gguf() -> str:
    from hwkit.models import SMOLLM2

    return str(SMOLLM2.gguf_path())


def _exports() -> Path:
    from hwkit.paths import cache_dir

    return cache_dir("bench-serve")


def _export(kind: str, quant: str, target: Path, *extra: str) -> str:
    """hwkit's own export of SmolLM2 (made once, kept under the cache root)."""
    if not target.exists():
        print(f"exporting {kind} {quant} (once) ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "hwkit", "export", kind, "smollm2-135m-instruct"]
        cmd += ["-q", quant, "--out", str(target.parent), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not target.exists():
            raise Skip(f"hwkit export {kind} -q {quant} failed: {done.stderr.strip()[-300:]}")
    return str(target)


def _gguf(quant: str) -> Callable[[], str]:
    return lambda: _export("gguf", quant, _exports() / f"smollm2-135m-instruct-{quant}.gguf")


def _openvino_kv(precision: str) -> Callable[[], str]:
    return lambda: _export(
        "openvino", precision, _exports() / f"openvino-kv-{precision}", "--kv-cache"
    )


ROWS: dict[str, Row] = {
    "transformers-fp32": Row(
        "transformers fp32", lambda: "smollm2-135m-instruct", "transformers", "float32"
    ),
    "llama.cpp-q8_0": Row("llama.cpp q8_0", _gguf("q8_0"), "llama.cpp"),
    "llama.cpp-q4_k_m": Row("llama.cpp q4_k_m", _gguf("q4_k_m"), "llama.cpp"),
    "llama.cpp-gguf": Row("llama.cpp q4_1 (pkg)", _smollm2_gguf, "llama.cpp"),
    "openvino-fp16": Row("openvino fp16", _openvino_kv("fp16"), "openvino"),
    "openvino-int8": Row("openvino int8", _openvino_kv("int8"), "openvino"),
}
DEFAULT_ROWS = "llama.cpp-q8_0,llama.cpp-q4_k_m,transformers-fp32,openvino-fp16,openvino-int8"


class Skip(Exception):
    """The row cannot run here; the message says why."""


def check_row(row: Row) -> str:
    """The row's model source, or Skip with the reason it cannot run."""
    from hwkit.errors import HwkitError
    from hwkit.models import resolve
    from hwkit.runtime import current

    runtimes = current().plugins.runtimes
    names = runtimes.names()
    if row.runtime not in names:
        raise Skip(f"runtime {row.runtime!r} is not registered (registered: {', '.join(names)})")
    try:
        source = row.source()
        resolved = resolve(source)
    except (HwkitError, OSError) as exc:
        raise Skip(f"model not available: {exc}") from None
    if not runtimes.get(row.runtime)().accepts(resolved):
        raise Skip(f"runtime {row.runtime!r} does not load {resolved.format} models")
    return source


# -- the server ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``hwkit serve`` for one row in a subprocess; its log in a temporary file."""

    def __init__(self, row: Row, source: str, args: argparse.Namespace) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = "bench"
        cmd = [
            sys.executable,
            "-m",
            "hwkit",
            "serve",
            "--model",
            f"{self.name}={source}",
            "--port",
            str(self.port),
            "--batch",
            str(args.batch),
            "--max-queue",
            str(max(16, 2 * args.clients)),
            "--max-tokens",
            str(max(512, args.max_tokens)),
        ]
        if row.dtype:
            cmd += ["--dtype", row.dtype]
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        fd, name = tempfile.mkstemp(prefix="hwkit-serve-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(fd, "wb") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx2 as httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Skip(f"the server exited ({self.proc.returncode}): {self.tail()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise Skip(f"the server did not answer within {timeout:.0f} s: {self.tail()}")

    def health(self) -> dict[str, Any]:
        import httpx2 as httpx

        result: dict[str, Any] = httpx.get(self.base + "/health", timeout=10).json()
        return result

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down, the pool unloads
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


# -- the client ----------------------------------------------------------------------------
@dataclass
class Timing:
    tokens: int
    sent: float
    first: float | None  # first content chunk
    last: float

    @property
    def ttft(self) -> float:
        return (self.first or self.last) - self.sent

    @property
    def decode_rate(self) -> float | None:
        if self.first is None or self.tokens < 2 or self.last <= self.first:
            return None
        return (self.tokens - 1) / (self.last - self.first)


async def one(client: Any, server: Server, prompt: str, max_tokens: int) -> Timing:
    body = {
        "model": server.name,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
    }
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", server.base + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread()).decode()[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
            choices = event.get("choices") or []
            if first is None and choices and choices[0]["delta"].get("content"):
                first = time.perf_counter()
    return Timing(tokens, sent, first, time.perf_counter())


async def clients(server: Server, n: int, rounds: int, max_tokens: int) -> list[Timing]:
    """``n`` clients, each sending ``rounds`` requests back to back (prompts rotated)."""
    import httpx2 as httpx

    async def client_loop(client: Any, index: int) -> list[Timing]:
        timings = []
        for r in range(rounds):
            prompt = PROMPTS[(index + r * n) % len(PROMPTS)]
            timings.append(await one(client, server, prompt, max_tokens))
        return timings

    limits = httpx.Limits(max_connections=n + 2)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        per_client = await asyncio.gather(*(client_loop(client, i) for i in range(n)))
    return [t for timings in per_client for t in timings]


def aggregate(timings: list[Timing]) -> float:
    start = min(t.sent for t in timings)
    end = max(t.last for t in timings)
    return sum(t.tokens for t in timings) / (end - start)


def measure(row: Row, args: argparse.Namespace) -> dict[str, Any]:
    source = check_row(row)
    server = Server(row, source, args)
    try:
        server.wait_ready()
        asyncio.run(clients(server, 1, 1, 8))  # loads the model
        placed = server.health()["placements"].get(server.name, {})
        if placed.get("runtime") != row.runtime:
            raise Skip(f"the plan chose runtime {placed.get('runtime')!r}, not {row.runtime!r}")
        # warm-up at the batch shape the many-clients run uses
        asyncio.run(clients(server, args.clients, 1, min(8, args.max_tokens)))
        single = asyncio.run(clients(server, 1, args.prompts, args.max_tokens))
        alone = asyncio.run(clients(server, 1, args.rounds, args.max_tokens))
        many = asyncio.run(clients(server, args.clients, args.rounds, args.max_tokens))
        rates = [r for t in single if (r := t.decode_rate) is not None]
        one_client, n_clients = aggregate(alone), aggregate(many)
        return {
            "row": row.label,
            "runtime": row.runtime,
            "device": placed.get("device"),
            "dtype": placed.get("dtype"),
            "ttft_ms": round(statistics.median(t.ttft for t in single) * 1000, 1),
            "decode_tok_s": round(statistics.median(rates), 1) if rates else None,
            "agg_1_tok_s": round(one_client, 1),
            f"agg_{args.clients}_tok_s": round(n_clients, 1),
            "ratio": round(n_clients / one_client, 2),
            f"ttft_{args.clients}_ms": round(statistics.median(t.ttft for t in many) * 1000, 1),
            "tokens_per_request": round(statistics.mean(t.tokens for t in many), 1),
        }
    finally:
        server.stop()


# -- the baseline: llama-cpp-python called directly on the same file ----------------------
def direct_llama(source: str, args: argparse.Namespace) -> dict[str, Any]:
    """Single-stream TTFT and decode tokens/s of ``llama_cpp.Llama`` on ``source`` with the
    settings a user would write (all physical cores, the same context), greedy, streamed
    through its own chat template, over the same prompts and ``max_tokens``."""
    import llama_cpp

    threads = args.threads or _physical_cores()
    llm = llama_cpp.Llama(
        model_path=source,
        n_ctx=4096,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        verbose=False,
    )
    try:
        for prompt in PROMPTS[:1]:  # warm-up
            _direct_one(llm, prompt, 8)
        timings = [_direct_one(llm, p, args.max_tokens) for p in PROMPTS[: args.prompts]]
    finally:
        llm.close()
    rates = [r for t in timings if (r := t.decode_rate) is not None]
    return {
        "ttft_ms": round(statistics.median(t.ttft for t in timings) * 1000, 1),
        "decode_tok_s": round(statistics.median(rates), 1) if rates else None,
    }


def _direct_one(llm: Any, prompt: str, max_tokens: int) -> Timing:
    sent = time.perf_counter()
    first: float | None = None
    pieces = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            pieces += 1
            if first is None:
                first = time.perf_counter()
    # llama.cpp streams one piece per token here; the evaluated count is exact
    tokens = max(pieces, int(llm.n_tokens) - _prompt_tokens(llm, prompt))
    return Timing(tokens, sent, first, time.perf_counter())


def _prompt_tokens(llm: Any, prompt: str) -> int:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template", "")
    eos = llm.detokenize([llm.token_eos()]).decode("utf-8", "replace")
    bos = llm.detokenize([llm.token_bos()]).decode("utf-8", "replace")
    text = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(
        messages=[{"role": "user", "content": prompt}]
    ).prompt
    return len(llm.tokenize(text.encode(), add_bos=False, special=True))


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        default=DEFAULT_ROWS,
        help=f"comma-separated rows to measure, of: {', '.join(ROWS)}",
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (vs 1)")
    parser.add_argument("--batch", type=int, default=8, help="hwkit serve --batch")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="requests per client")
    parser.add_argument(
        "--prompts", type=int, default=len(PROMPTS), help="single-stream requests (TTFT, decode)"
    )
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the server")
    parser.add_argument("--quick", action="store_true", help="16 tokens, 1 round, 2 prompts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.max_tokens, args.rounds, args.prompts = 16, 1, 2

    results, skipped = [], []
    for key in [k.strip() for k in args.rows.split(",") if k.strip()]:
        row = ROWS.get(key)
        if row is None:
            skipped.append({"row": key, "reason": f"unknown row (known: {', '.join(ROWS)})"})
            continue
        try:
            # the direct baseline runs just before and just after the server, and the two
            # are averaged: this shared VM drifts by tens of percent over minutes
            before = direct_llama(row.source(), args) if row.runtime == "llama.cpp" else None
            result = measure(row, args)
            if before is not None:
                after = direct_llama(row.source(), args)
                direct = {
                    key: round((before[key] + after[key]) / 2, 1)
                    if before[key] and after[key]
                    else None
                    for key in ("ttft_ms", "decode_tok_s")
                }
                result["direct_ttft_ms"] = direct["ttft_ms"]
                result["direct_decode_tok_s"] = direct["decode_tok_s"]
                result["direct_decode_before_after"] = [
                    before["decode_tok_s"],
                    after["decode_tok_s"],
                ]
                if direct["decode_tok_s"] and result["decode_tok_s"]:
                    result["vs_direct"] = round(result["decode_tok_s"] / direct["decode_tok_s"], 3)
            results.append(result)
        except Skip as exc:
            skipped.append({"row": row.label, "reason": str(exc)})
    setup = {
        "clients": args.clients,
        "batch": args.batch,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "threads": args.threads or "default",
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps({"setup": setup, "results": results, "skipped": skipped}, indent=2))
        return
    print(" ".join(f"{k}={v}" for k, v in setup.items()))
    n = args.clients
    print(
        f"{'row':<20}{'runtime':<14}{'device':<9}{'TTFT ms':>9}{'decode tok/s':>14}"
        f"{'1 client tok/s':>16}{f'{n} clients tok/s':>18}{f'{n} vs 1':>9}"
        f"{f'TTFT@{n} ms':>12}"
    )
    for r in results:
        print(
            f"{r['row']:<20}{r['runtime']:<14}{r['device'] or '?':<9}{r['ttft_ms']:>9}"
            f"{r['decode_tok_s'] if r['decode_tok_s'] is not None else '-':>14}"
            f"{r['agg_1_tok_s']:>16}{r[f'agg_{n}_tok_s']:>18}{r['ratio']:>8}x"
            f"{r[f'ttft_{n}_ms']:>12}"
        )
    direct = [r for r in results if "direct_decode_tok_s" in r]
    if direct:
        print("\nllama-cpp-python called directly on the same file (single stream):")
        print(
            f"{'row':<20}{'TTFT ms':>9}{'decode tok/s':>14}{'(before, after)':>18}"
            f"{'hwkit serve / direct':>22}"
        )
        for r in direct:
            pair = ", ".join(str(x) for x in r["direct_decode_before_after"])
            print(
                f"{r['row']:<20}{r['direct_ttft_ms']:>9}{r['direct_decode_tok_s'] or '-':>14}"
                f"{'(' + pair + ')':>18}{r.get('vs_direct', '-'):>21}x"
            )
    for s in skipped:
        print(f"skipped {s['row']}: {s['reason']}")


def _cpu_name() -> str:
    try:
        from hwkit.backends.cpu import cpu_model_name

        return cpu_model_name()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    main()
