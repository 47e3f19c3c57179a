"""RAG on squad-open, side by side in one run: retrieval recall, then answers.

Retrieval (every test question unless ``--retrieval-queries``): recall@1/5/20 of the gold
paragraph for BM25, dense (all-MiniLM-L6-v2), hybrid (convex, alpha 0.5) and, with
``--rerank RUN``, a cross-encoder over the hybrid top ``--rerank-top`` (hwkit's own
``cross-encoder`` run).

Answers (the first ``--limit`` test questions, greedy, the llama.cpp runtime on q8_0 GGUF
exports): no retrieval; plain top-k RAG over the hybrid index; the self-reflective loop
(grade with the cross-encoder when given, else the generator as judge; rewrite; check
support; refine), each with the base SmolLM2-135M-Instruct and, with ``--reader RUN``, the
reader hwkit trained (``hwkit rag reader-data`` + ``hwkit train sft``). Per row: exact
match, token F1 (SQuAD normalisation), answers that cite, citation precision (the cited
passage is the gold one), answers whose sentences are all supported, p50/p95 latency.

    python bench/rag_squad.py --reader /work/runs/reader --rerank /work/runs/cross-encoder
    python bench/rag_squad.py --quick          # 10 questions, 300 retrieval queries
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SQUAD = Path(os.environ.get("HWKIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "squad-open"


def _cache() -> Path:
    from hwkit.paths import cache_dir

    return cache_dir("bench-rag")


def index(kind: str) -> Path:
    """An hwkit index of the squad-open corpus (built once, kept under the cache root)."""
    path = _cache() / f"squad-{kind}"
    if not (path / "manifest.json").is_file():
        print(f"building the {kind} index (once) ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "hwkit", "index", "build", str(path)]
        cmd += ["--from", str(SQUAD / "corpus.jsonl"), "-r", kind]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return path


def gguf(source: str, label: str) -> str:
    """A q8_0 GGUF of ``source`` (a model name or a run), exported once by hwkit; a run
    trained again since is exported again (the cache is keyed by its path and weights)."""
    key = source
    path = Path(source)
    if path.exists():
        stamps = [f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted(path.glob("*.safetensors"))]
        key = f"{path.resolve()}|{'|'.join(stamps)}"
    out = _cache() / f"gguf-{label}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    found = sorted(out.glob("*.gguf")) if out.is_dir() else []
    if not found:
        print(f"exporting {label} to GGUF q8_0 (once) ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "hwkit", "export", "gguf", source, "-q", "q8_0"]
        subprocess.run([*cmd, "--out", str(out)], check=True, capture_output=True, text=True)
        found = sorted(out.glob("*.gguf"))
    return str(found[0])


def retrieval(args: argparse.Namespace) -> list[dict[str, Any]]:
    from hwkit.plugins.rag.evaluation import RECALL_AT, read_qa
    from hwkit.plugins.retrievers.beir import latency_summary, score_run
    from hwkit.plugins.retrievers.store import open_index

    items = read_qa(SQUAD, "test", args.retrieval_queries)
    qrels = {q.id: q.gold for q in items}
    retrievers: list[tuple[str, Any]] = [
        (kind, open_index(index(kind))) for kind in ("bm25", "dense", "hybrid")
    ]
    if args.rerank:
        from hwkit.plugins.retrievers.rerank import RerankRetriever

        hybrid = retrievers[-1][1]
        retrievers.append(
            (f"hybrid + rerank top {args.rerank_top}", RerankRetriever(
                args.rerank, first_stage=hybrid, top_n=args.rerank_top
            ))
        )  # fmt: skip
    rows = []
    for name, r in retrievers:
        run: dict[str, dict[str, float]] = {}
        times = []
        r.search(items[0].question, k=1)  # lazy set-up is not timed
        for item in items:
            t0 = time.perf_counter()
            hits = r.search(item.question, k=max(RECALL_AT))
            times.append(time.perf_counter() - t0)
            run[item.id] = {h.id: h.score for h in hits}
        scores = score_run(qrels, run, [f"recall@{k}" for k in RECALL_AT])
        latency = latency_summary(times)
        rows.append({"retriever": name, **scores, "p50_ms": round(latency["p50"], 1)})
        print(f"  {name}: {scores}", file=sys.stderr, flush=True)
    return rows


def answers(args: argparse.Namespace) -> list[dict[str, Any]]:
    from hwkit.jobs import load_generator
    from hwkit.plugins.rag.checks import CrossEncoderGrader, JudgeGrader
    from hwkit.plugins.rag.evaluation import evaluate_rag, read_qa
    from hwkit.plugins.rag.pipeline import RagPipeline, RagSettings
    from hwkit.plugins.retrievers.store import open_index

    items = read_qa(SQUAD, "test", args.limit)
    retriever = open_index(index("hybrid"))
    models = [("base SmolLM2-135M", gguf("smollm2-135m-instruct", "base"))]
    if args.reader:
        models.append(("hwkit reader", gguf(args.reader, "reader")))
    modes = {
        "no retrieval": RagSettings(mode="never", max_new_tokens=args.max_tokens),
        f"plain top-{args.k}": RagSettings(k=args.k, max_new_tokens=args.max_tokens),
        "self-reflective": RagSettings(
            k=args.k, reflect=True, candidates=args.candidates, max_new_tokens=args.max_tokens
        ),
    }
    cross = CrossEncoderGrader(args.rerank) if args.rerank else None
    rows = []
    for label, path in models:
        generator = load_generator(path, context=2048, runtimes=("llama.cpp",))
        try:
            for mode, settings in modes.items():
                if args.modes and mode.split()[0] not in args.modes:
                    continue
                grader = (cross or JudgeGrader(generator)) if settings.reflect else None
                pipeline = RagPipeline(retriever, generator, settings, grader=grader)
                summary = evaluate_rag(pipeline, items, recall=False)
                row = {
                    "model": label,
                    "mode": mode,
                    "grader": grader.name if grader else None,
                    **{k: summary[k] for k in ("questions", "em", "f1", "cited_rate")},
                    "citation_precision": summary["citation_precision"],
                    "supported_rate": summary["supported_rate"],
                    **{f"{k}_ms": v for k, v in summary["latency_ms"].items()},
                }
                rows.append(row)
                print(f"  {label} / {mode}: {row}", file=sys.stderr, flush=True)
        finally:
            generator.close()
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="questions answered per row")
    parser.add_argument("--retrieval-queries", type=int, default=None, help="default: all")
    parser.add_argument("--reader", help="a reader run (hwkit train sft) or model directory")
    parser.add_argument("--rerank", help="a cross-encoder run or directory")
    parser.add_argument("--rerank-top", type=int, default=20)
    parser.add_argument("-k", type=int, default=3, help="passages per answer")
    parser.add_argument("--candidates", type=int, default=10, help="graded when reflecting")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--modes", nargs="*", help="no, plain, self-reflective (default all)")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 questions, 300 queries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.retrieval_queries = 10, 300
    cpu = os.cpu_count()
    print(f"squad-open test; cores={cpu} load_average_1m={os.getloadavg()[0]:.2f}")
    out: dict[str, Any] = {}
    if not args.skip_retrieval:
        out["retrieval"] = retrieval(args)
    out["answers"] = answers(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, rows in out.items():
        print(f"\n{name}\n{table(rows)}")


if __name__ == "__main__":
    main()
