"""SciFact retrieval benchmark: quality, latency and build time, ours next to plain bm25s.

    python bench/retrieval_scifact.py                       # build, evaluate on test
    python bench/retrieval_scifact.py --tune-alpha          # + choose hybrid alpha on TRAIN
    python bench/retrieval_scifact.py --finetuned DIR       # + dense/hybrid with DIR's model
    python bench/retrieval_scifact.py --index /tmp/sf_idx   # reuse (or create) a saved index
    python bench/retrieval_scifact.py --index /tmp/sf_idx --tune-only   # only the alpha sweep
    python bench/retrieval_scifact.py --tune-bm25           # k1/b grid on TRAIN
    python bench/retrieval_scifact.py --rerank RUN --rerank-only   # bm25 vs bm25 -> RUN
    python bench/retrieval_scifact.py --data ../shared/data/squad-open --rerank RUN \
        --rerank-only --rerank-top 20 --queries 300 --metrics recall@1,recall@5

Prints nDCG@10 / Recall@100 / MRR@10 (or ``--metrics``, computed by ranx) and per-query
search latency (p50/p95, query embedding and reranking included) for bm25 (ours: stemming +
stopwords), plain bm25s (its default tokenizer, no stemming), bm25+RM3, dense, hybrid
(convex) and hybrid (RRF), with ``--rerank`` BM25 -> a cross-encoder (a model directory or
a ``hwkit train cross-encoder`` run) over BM25's top ``--rerank-top``, and the index
build/save/load times. ``--rerank-only`` runs only the bm25 and rerank rows (no embedder).
``--queries N`` scores a seeded sample of N judged queries. Tuning uses only the train qrels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HWKIT_LOG_LEVEL", "WARNING")

import numpy as np

from hwkit.errors import NotFoundError
from hwkit.plugins.retrievers.beir import (
    evaluate_retriever,
    latency_summary,
    load_beir,
    read_qrels,
    score_run,
)
from hwkit.plugins.retrievers.bm25 import BM25Retriever, top_k
from hwkit.plugins.retrievers.embedding import int8_options, make_embedder
from hwkit.plugins.retrievers.hybrid import HybridRetriever
from hwkit.retriever import Document, Hit, Retriever
from hwkit.runtime import current

REPO = Path(__file__).resolve().parents[1]


class PlainBM25s(Retriever):
    """bm25s as its README shows it: default tokenizer, English stopwords, no stemmer."""

    name = "bm25s-plain"

    def index(self, docs: Any) -> None:
        import bm25s

        docs = list(docs)
        self.ids = [d.id for d in docs]
        self.by_id = {d.id: d for d in docs}
        self.bm = bm25s.BM25()
        self.bm.index(
            bm25s.tokenize(
                [f"{d.title} {d.text}" for d in docs], stopwords="en", show_progress=False
            ),
            show_progress=False,
        )

    def search(self, query: str, k: int = 10) -> list[Hit]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        known = [t for t in tokens if t in self.bm.vocab_dict]
        if not known:
            return []
        scores = self.bm.get_scores(known)
        return [Hit(self.ids[i], float(scores[i])) for i in top_k(scores, k, positive_only=True)]

    def documents(self, ids: Sequence[str]) -> list[Document]:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise NotFoundError(f"document {missing[0]!r} is not in the index")
        return [self.by_id[i] for i in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: Path) -> None:  # not needed for the benchmark
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Retriever:
        raise NotImplementedError


METRICS = ("ndcg@10", "recall@100", "mrr@10")
LABELS = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "mrr@10": "MRR@10"}


def header(metrics: Sequence[str]) -> str:
    names = "".join(f"{LABELS.get(m, m):<9}" for m in metrics)
    return f"\n{'retriever':<26} {names}p50 ms   p95 ms  build s"


def row(
    name: str,
    retriever: Retriever,
    data: Any,
    build_s: float | None,
    metrics: Sequence[str] = METRICS,
    k: int = 100,
) -> dict[str, Any]:
    res = evaluate_retriever(retriever, data.queries, data.qrels, k=k)
    scores = res.metrics if tuple(metrics) == METRICS else score_run(data.qrels, res.run, metrics)
    out = {
        "retriever": name,
        **scores,
        "queries": res.queries,
        "p50_ms": res.latency_ms["p50"],
        "p95_ms": res.latency_ms["p95"],
    }
    out["build_s"] = build_s
    print(
        f"{name:<26} "
        + "".join(f"{scores[m]:.4f}   " for m in metrics)
        + f"{res.latency_ms['p50']:7.2f}  {res.latency_ms['p95']:7.2f}  "
        + (f"{build_s:7.1f}" if build_s is not None else "      -"),
        flush=True,
    )
    return out


def sample_queries(data: Any, n: int | None, seed: int = 0) -> Any:
    """``data`` judged on a seeded sample of ``n`` of its queries (all when None)."""
    if n is None or n >= len(data.qrels):
        return data
    ids = list(data.qrels)
    keep = set(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())
    data.qrels = {q: data.qrels[q] for i, q in enumerate(ids) if i in keep}
    return data


def rerank_rows(
    bm25: BM25Retriever,
    data: Any,
    run: Path,
    top: int,
    metrics: Sequence[str],
    cache: Path | None = None,
) -> list[dict[str, Any]]:
    """BM25 -> the cross-encoder at ``run`` over BM25's top ``top``, planned on this machine's
    runtime (device, dtype, micro-batch). Each query's reranked hits are appended to
    ``cache`` as they come and reused on a rerun, so a killed run resumes where it stopped
    (latency is over the queries searched in this process)."""
    from hwkit.plugins.retrievers.rerank import RerankRetriever
    from hwkit.rundir import read_jsonl

    reranker = RerankRetriever(run, first_stage=bm25, top_n=top, runtime=current())
    reranker.score_pairs("warm-up", ["load the model before timing"])
    done: dict[str, dict[str, float]] = {}
    if cache is not None:
        done = {r["query"]: r["hits"] for r in read_jsonl(cache) if r["query"] in data.qrels}
    reused = len(done)
    times: list[float] = []
    t0 = time.perf_counter()
    with open(cache or os.devnull, "a", encoding="utf-8") as log:
        for qid in data.qrels:
            if qid in done or qid not in data.queries:
                continue
            start = time.perf_counter()
            # search(k) reranks max(k, top_n) candidates: ask for ``top``, exactly those
            hits = reranker.search(data.queries[qid], k=top)
            times.append(time.perf_counter() - start)
            done[qid] = {h.id: h.score for h in hits}
            log.write(json.dumps({"query": qid, "hits": done[qid]}) + "\n")
            log.flush()
    scores = score_run(data.qrels, done, metrics)
    latency = latency_summary(times)
    name = f"bm25 -> rerank top {top}"
    print(
        f"{name:<26} "
        + "".join(f"{scores[m]:.4f}   " for m in metrics)
        + f"{latency['p50']:7.2f}  {latency['p95']:7.2f}        -"
        + (f"   ({reused} queries from {cache})" if reused else ""),
        flush=True,
    )
    out: dict[str, Any] = {
        "retriever": name,
        **scores,
        "queries": len(done),
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "model": str(reranker.model_path),
        "wall_s": time.perf_counter() - t0,
        "reused_queries": reused,
    }
    if reranker.plan is not None:
        out["plan"] = {"device": reranker.plan.device, "dtype": reranker.plan.dtype}
    return [out]


def tune_alpha(hybrid: HybridRetriever, data_dir: Path) -> tuple[float, list[dict[str, Any]]]:
    """Sweep alpha (and RRF k) on the TRAIN qrels; returns the best alpha by nDCG@10."""
    train = read_qrels(data_dir / "qrels" / "train.tsv")
    queries = load_beir(data_dir, "train").queries
    qids = [q for q in train if q in queries]
    qvecs = hybrid.embedder.embed([queries[q] for q in qids], kind="query")
    lexical = [hybrid.bm25.scores(queries[q]) for q in qids]
    table = []
    best = (-1.0, 0.0)
    print("\nalpha tuning on TRAIN qrels (convex combination)")
    for alpha in np.round(np.arange(0.0, 1.0001, 0.05), 2):
        run = {
            q: {
                h.id: h.score for h in hybrid.fuse(lex, v, 100, alpha=float(alpha), fusion="convex")
            }
            for q, lex, v in zip(qids, lexical, qvecs, strict=True)
        }
        m = score_run(train, run)
        table.append({"fusion": "convex", "alpha": float(alpha), **m})
        print(
            f"  alpha={alpha:.2f}  nDCG@10={m['ndcg@10']:.4f}  R@100={m['recall@100']:.4f}",
            flush=True,
        )
        best = max(best, (m["ndcg@10"], float(alpha)))
    saved_k = hybrid.rrf_k
    for k in (1.0, 10.0, 60.0, 100.0):
        hybrid.rrf_k = k
        run = {
            q: {h.id: h.score for h in hybrid.fuse(lex, v, 100, fusion="rrf")}
            for q, lex, v in zip(qids, lexical, qvecs, strict=True)
        }
        m = score_run(train, run)
        table.append({"fusion": "rrf", "k": k, **m})
        print(
            f"  rrf k={k:<5}  nDCG@10={m['ndcg@10']:.4f}  R@100={m['recall@100']:.4f}", flush=True
        )
    hybrid.rrf_k = saved_k
    print(f"best alpha on train: {best[1]:.2f} (nDCG@10 {best[0]:.4f})")
    return best[1], table


def tune_bm25(data_dir: Path) -> list[dict[str, Any]]:
    """k1 x b grid for BM25 on the TRAIN qrels (Lucene BM25, stemming, stopwords)."""
    train = load_beir(data_dir, "train")
    table = []
    print("\nBM25 k1/b tuning on TRAIN qrels")
    base = BM25Retriever()
    base.index(train.corpus)
    for k1 in (0.9, 1.2, 1.5):
        for b in (0.6, 0.75, 0.9):
            r = BM25Retriever(k1=k1, b=b)
            r.docs, r._doc_tokens = base.docs, base._doc_tokens
            r._build()
            run = {
                q: {h.id: h.score for h in r.search(t, 100)}
                for q, t in train.split_queries().items()
            }
            m = score_run(train.qrels, run)
            table.append({"k1": k1, "b": b, **m})
            print(f"  k1={k1} b={b}  nDCG@10={m['ndcg@10']:.4f}", flush=True)
    return table


def latency_only(hybrid: HybridRetriever, data: Any, n: int) -> dict[str, Any]:
    """Wall and CPU time of ``n`` single-query hybrid searches (CPU time is what the process
    itself used: on a shared, overloaded machine it is closer to an idle machine's latency)."""
    texts = list(data.split_queries().values())[:n]
    for t in texts[:3]:
        hybrid.search(t, 10)
    wall, cpu = [], []
    for t in texts:
        w0, c0 = time.perf_counter(), time.process_time()
        hybrid.search(t, 100)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    out = {"queries": n, "wall_ms": latency_summary(wall), "cpu_ms": latency_summary(cpu)}
    print(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    default_data = (
        Path(os.environ.get("HWKIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "scifact"
    )
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--embedder", default="torch", help="torch or openvino")
    ap.add_argument(
        "--int8",
        choices=("weights", "full"),
        default=None,
        help="openvino: INT8 weights, or full INT8 calibrated on 300 corpus documents",
    )
    ap.add_argument(
        "--model", default=None, help="embedding model directory (default all-MiniLM-L6-v2)"
    )
    ap.add_argument("--finetuned", type=Path, default=None, help="a fine-tuned embedder directory")
    ap.add_argument(
        "--index", type=Path, default=None, help="load this hybrid index, or build and save it here"
    )
    ap.add_argument("--tune-alpha", action="store_true")
    ap.add_argument(
        "--tune-only", action="store_true", help="with --index: only run the train tuning"
    )
    ap.add_argument("--latency-only", type=int, default=0, help="N hybrid queries, then exit")
    ap.add_argument("--tune-bm25", action="store_true", help="k1/b grid on TRAIN, then exit")
    ap.add_argument("--alpha", type=float, default=None, help="override the hybrid alpha")
    ap.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument(
        "--rerank", type=Path, default=None, help="cross-encoder directory or training run"
    )
    ap.add_argument("--rerank-top", type=int, default=100, help="BM25 hits the reranker sees")
    ap.add_argument(
        "--rerank-cache", type=Path, default=None, help="JSONL of reranked queries: resume from it"
    )
    ap.add_argument(
        "--rerank-only", action="store_true", help="only the bm25 and bm25 -> rerank rows"
    )
    ap.add_argument("--split", default="test", help="qrels split to evaluate on")
    ap.add_argument("--queries", type=int, default=None, help="a seeded sample of N queries")
    ap.add_argument("--metrics", default=",".join(METRICS), help="ranx metrics, comma-separated")
    args = ap.parse_args(argv)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())

    import torch

    if args.tune_bm25:
        table = tune_bm25(args.data)
        if args.json:
            args.json.write_text(json.dumps({"bm25_tuning": table}, indent=2))
        return 0
    data = sample_queries(load_beir(args.data, args.split), args.queries)
    print(
        f"{args.data.name}: {len(data.corpus)} docs, {len(data.qrels)} {args.split} queries; "
        f"torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}"
    )
    if args.rerank_only:
        if args.rerank is None:
            ap.error("--rerank-only needs --rerank RUN_DIR")
        print(header(metrics))
        t0 = time.perf_counter()
        bm25 = BM25Retriever()
        bm25.index(data.corpus)
        rows = [row("bm25 (hwkit)", bm25, data, time.perf_counter() - t0, metrics)]
        rows += rerank_rows(bm25, data, args.rerank, args.rerank_top, metrics, args.rerank_cache)
        print(f"load avg at the end {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=2))
        return 0
    # As `hwkit index build --int8` does: full INT8 calibrates on a sample of the corpus.
    options = int8_options(args.int8, data.corpus) if args.int8 else {}
    # Built by the core on this machine's runtime: the device and dtype its plan chose.
    embedder = make_embedder(args.embedder, args.model, runtime=current(), **options)

    build: dict[str, float] = {}
    if args.index is not None and (args.index / "manifest.json").is_file():
        t0 = time.perf_counter()
        hybrid = HybridRetriever.load(args.index, embedder=embedder)
        build["load_s"] = time.perf_counter() - t0
        hybrid_build = None
    else:
        t0 = time.perf_counter()
        hybrid = HybridRetriever(embedder)
        hybrid.index(data.corpus)
        hybrid_build = time.perf_counter() - t0
        build["hybrid_build_s"] = hybrid_build
        if args.index is not None:
            t0 = time.perf_counter()
            hybrid.save(args.index)
            build["save_s"] = time.perf_counter() - t0
    if args.alpha is not None:
        hybrid.alpha = args.alpha
    if args.latency_only:
        print("build:", ", ".join(f"{k}={v:.1f}" for k, v in build.items()))
        print(f"embedder {embedder.name}, load avg {os.getloadavg()[0]:.1f}")
        latency = latency_only(hybrid, data, args.latency_only)
        if args.json:
            args.json.write_text(json.dumps(latency, indent=2))
        return 0
    if args.tune_only:
        best, table = tune_alpha(hybrid, args.data)
        if args.json:
            args.json.write_text(json.dumps({"alpha_tuning": {"best": best, "table": table}}))
        return 0

    rows = []
    print(header(metrics))
    t0 = time.perf_counter()
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    rows.append(row("bm25 (hwkit)", bm25, data, time.perf_counter() - t0, metrics))
    t0 = time.perf_counter()
    plain = PlainBM25s()
    plain.index(data.corpus)
    rows.append(row("bm25s plain (no stemmer)", plain, data, time.perf_counter() - t0, metrics))
    rm3 = BM25Retriever(rm3=True)
    rm3.docs, rm3._bm25, rm3._doc_tokens = bm25.docs, bm25._bm25, bm25._doc_tokens
    rows.append(row("bm25 + RM3", rm3, data, None, metrics))
    rows.append(row(f"dense {embedder.name}", hybrid.dense, data, None, metrics))
    rows.append(row(f"hybrid convex a={hybrid.alpha:.2f}", hybrid, data, hybrid_build, metrics))
    hybrid.fusion = "rrf"
    rows.append(row(f"hybrid rrf k={hybrid.rrf_k:g}", hybrid, data, None, metrics))
    hybrid.fusion = "convex"
    if args.rerank is not None:
        rows += rerank_rows(bm25, data, args.rerank, args.rerank_top, metrics, args.rerank_cache)

    if args.finetuned is not None:
        ft_emb = make_embedder(args.embedder, args.finetuned, runtime=current(), **options)
        t0 = time.perf_counter()
        ft = HybridRetriever(ft_emb, alpha=hybrid.alpha)
        ft.index(data.corpus)
        ft_build = time.perf_counter() - t0
        rows.append(row("dense fine-tuned", ft.dense, data, None, metrics))
        rows.append(row(f"hybrid fine-tuned a={ft.alpha:.2f}", ft, data, ft_build, metrics))

    print("\nbuild:", ", ".join(f"{k}={v:.1f}" for k, v in build.items()))
    result: dict[str, Any] = {"rows": rows, "build": build}
    if args.tune_alpha:
        best, table = tune_alpha(hybrid, args.data)
        result["alpha_tuning"] = {"best": best, "table": table}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
