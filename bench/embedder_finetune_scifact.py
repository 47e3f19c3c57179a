"""Fine-tune all-MiniLM-L6-v2 on SciFact's train qrels and save it for retrieval evaluation.

Runs the same path as ``hwkit train embedder``: config -> runtime -> allocator plan ->
fit (in-batch negatives, gradient cache when the micro-batch is smaller than the batch).
The output directory's ``model/`` is a sentence-transformers directory that
``TorchEmbedder(model=OUT/model)`` and ``OpenVINOEmbedder(model=OUT/model)`` load.

    python bench/embedder_finetune_scifact.py runs/minilm-scifact --epochs 1
    python bench/embedder_finetune_scifact.py runs/minilm-scifact --resume   # after a stop
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    default_data = Path(os.environ.get("HWKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data / "scifact")
    parser.add_argument("--model", default=None, help="base model directory (default MiniLM)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--query-max-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from hwkit.jobs import train
    from hwkit.plugins.trainers.embedder import EmbedderTrainConfig, EmbedderTrainer
    from hwkit.runtime import current

    config = EmbedderTrainConfig(
        model=args.model,
        data=args.data,
        split="train",
        output_dir=args.output_dir,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        micro_batch=args.micro_batch,
        max_seq_len=args.max_seq_len,
        query_max_len=args.query_max_len,
        learning_rate=args.lr,
        checkpoint_every=args.checkpoint_every,
    )
    start = time.perf_counter()
    result = train(EmbedderTrainer(), config, runtime=current(), resume=args.resume)
    summary = {
        "model": str(result.artifacts["model"]),
        "steps": result.steps,
        "wall_seconds": round(time.perf_counter() - start, 1),
        **result.metrics,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
