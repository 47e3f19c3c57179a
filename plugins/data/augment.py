"""Augment a small SFT set with generated turns: ``hwkit data augment``.

Each source row (a conversation ending in an assistant answer) gets ``per_row`` generation
attempts, the kinds taking turns (``followup, continuation, followup, ...``):

* ``followup``: the model writes a follow-up question a curious reader would ask after the
  answer, then answers it in the same voice with the original answer in its prompt. The new
  row is a standalone exchange: ``[system?, user: follow-up, assistant: reply]`` (the
  original answer grounds the reply but is not part of the row).
* ``continuation``: the model writes the user's next message in the conversation, then the
  assistant's reply to it with the whole conversation as context. The new row is the
  original exchange plus those two turns.

Every raw generation is appended to ``OUT.partial`` (keyed by source row, kind and attempt,
with a hash of the source row) as soon as it is made, so a killed run continues where it
stopped and a rerun with other thresholds filters again without generating. The filters run
at the end, over all generations in a fixed order, so the result does not depend on where a
run was interrupted:

1. text checks: ``empty``, ``too_short``, ``truncated`` (cut by max_new_tokens with no
   complete sentence), ``echo`` (the generated text is a copy of part of its prompt),
   ``not_a_question`` (a follow-up that does not end in a question mark, unless
   ``require_question`` is off),
   ``repetitive`` (word 5-grams that occur twice cover more than ``max_repetition`` of the
   new turns' characters: Gopher's duplicate n-gram rule, Rae et al. 2021, which also
   catches a reply that restates its user turn), ``too_long`` (the prompt did not fit the
   context);
2. ``incoherent``: cosine similarity of the embeddings of the new text (user turn and
   reply) and the source answer below ``min_coherence``;
3. ``near_duplicate``: cosine similarity at or above ``near_duplicate`` with any source
   answer or an earlier kept generation, or Jaccard similarity of the reply's character
   5-gram shingles (MinHash LSH, plugins/data/dedupe.py) at or above it.

Source rows that duplicate an earlier source row (dedupe.near at the same threshold) are
copied to the output but not augmented again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.atomic import write_jsonl_atomic
from hwkit.errors import ConfigError, UsageError
from hwkit.log import get_logger
from hwkit.plugins.data import dedupe as dedupe_mod
from hwkit.plugins.data import sft
from hwkit.plugins.data.columns import Columns
from hwkit.plugins.data.config import DataConfig
from hwkit.plugins.data.example import Example, normalise, word_count
from hwkit.plugins.data.records import Ledger
from hwkit.plugins.data.sources import load, mask_url
from hwkit.rejects import Reject, count_by_reason

if TYPE_CHECKING:
    from hwkit.embedder import Embedder
    from hwkit.inference import Generator, Message
    from hwkit.runtime import Runtime

log = get_logger(__name__)

KINDS = ("followup", "continuation")

# -- prompts: every text the model is given, in one place --------------------------------------
PROMPTS: dict[str, str] = {
    # followup, step 1: the question (user turn of the new row)
    "followup_question": (
        "Someone was asked: {question}\n\nThey answered: {answer}\n\n"
        "Write one follow-up question a curious reader would ask them about this answer. "
        "The question must make sense on its own. Reply with the question only."
    ),
    # followup, step 2: the reply, grounded in the original answer
    "followup_answer": (
        "Earlier you said: {answer}\n\n"
        "Answer this question in the same voice, using only what you said earlier: "
        "{question}"
    ),
    # continuation, step 1: the user's next message (step 2 is the conversation itself)
    "continuation_user": (
        "Here is a conversation.\n\n{transcript}\n\n"
        "Write the user's next message: a short reaction or a related question that "
        "continues the conversation. Reply with the message only."
    ),
}
PROMPTS_VERSION = hashlib.blake2b(
    json.dumps(PROMPTS, sort_keys=True).encode("utf-8"), digest_size=6
).hexdigest()

MIN_USER_WORDS = 3
MIN_REPLY_WORDS = 5
REPEAT_NGRAM = 5  # Gopher's shortest duplicate n-gram (its bound at 5 words: 0.15)
CONTEXT = 2048  # prompt plus new tokens planned per sequence
PARTIAL_FORMAT = 1

_LABEL = re.compile(
    r"^\s*(?:follow[- ]?up question|question|user|assistant|answer|reply|message)\s*:\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]\u201d\u2019]*(?=\s|$)")


@dataclass(frozen=True)
class AugmentSettings:
    """What to generate and how to filter it (the ``hwkit data augment`` options)."""

    model: str = "smollm2-135m-instruct"
    runtimes: tuple[str, ...] = ()
    per_row: int = 3
    kinds: tuple[str, ...] = KINDS
    min_coherence: float = 0.5
    near_duplicate: float = 0.9
    max_repetition: float = 0.15
    require_question: bool = True
    embedder_model: str = "all-MiniLM-L6-v2"
    seed: int = 0
    temperature: float = 0.8
    max_new_tokens: int = 96
    limit: int | None = None

    def validate(self) -> None:
        """One-line UsageError naming the first bad option."""
        for name in ("min_coherence", "near_duplicate", "max_repetition"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(
                    f"--{name.replace('_', '-')} {value:g} is outside [0, 1]",
                    hint="similarities and fractions are between 0 and 1 "
                    "(--max-repetition 1 turns that filter off)",
                )
        if not self.kinds:
            raise UsageError("--kinds is empty", hint=f"use {','.join(KINDS)}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise UsageError(
                f"--kinds: unknown kind {unknown[0]!r}", hint=f"known: {', '.join(KINDS)}"
            )
        if len(set(self.kinds)) != len(self.kinds):
            raise UsageError("--kinds names a kind twice", hint=f"e.g. {','.join(KINDS)}")
        if self.per_row < 1:
            raise UsageError(f"--per-row {self.per_row} must be at least 1")
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens {self.max_new_tokens} must be at least 1")
        if self.temperature < 0:
            raise UsageError(
                f"--temperature {self.temperature:g} is negative", hint="0 decodes greedily"
            )
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit {self.limit} must be at least 1")

    def fingerprint(self) -> dict[str, Any]:
        """What the raw generations depend on: a partial file made otherwise is refused."""
        return {
            "format": PARTIAL_FORMAT,
            "model": self.model,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "prompts": PROMPTS_VERSION,
        }

    def plan(self) -> list[tuple[str, int]]:
        """(kind, attempt of that kind) for each of a row's ``per_row`` attempts."""
        k = len(self.kinds)
        return [(self.kinds[a % k], a // k) for a in range(self.per_row)]


@dataclass
class AugmentSummary:
    """What a run did; ``rows_out == rows_in + kept``."""

    source: str
    out: str
    rejects: str
    partial: str
    rows_in: int
    duplicate_sources: list[int]
    attempts: int
    reused: int
    generator_calls: int
    kept: int
    kept_by_kind: dict[str, int]
    rejected: int
    rejected_by_reason: dict[str, int]
    rows_out: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- paths ----------------------------------------------------------------------------------------
def rejects_path(out: Path) -> Path:
    """``OUT.rejects.jsonl`` beside ``OUT.jsonl``."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.rejects.jsonl")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


# -- source rows ----------------------------------------------------------------------------------
def source_examples(cfg: DataConfig, limit: int | None = None) -> tuple[str, list[Example]]:
    """The source's SFT examples in source order (the first ``limit``), through the same
    reader and mapping as ``hwkit data prepare``; any unusable row is a one-line error."""
    if cfg.kind != "sft":
        raise UsageError(
            f"augment makes SFT rows; the data kind is {cfg.kind!r}", hint="use kind = 'sft'"
        )
    loaded = load(cfg)
    name = mask_url(loaded.name)
    if not loaded.records and not loaded.rejects.items:
        raise ConfigError(f"{name}: the source has no rows", hint="point at a non-empty source")
    problems: list[str] = [f"{r.where()}: {r.reason}: {r.detail}" for r in loaded.rejects.items]
    records = loaded.records if limit is None else loaded.records[:limit]
    examples: list[Example] = []
    if records:
        plan = sft.resolve(cfg, Columns(loaded.columns(), cfg.mapping, loaded.name))
        for rec in records:
            try:
                examples.append(sft.build(rec, plan, cfg))
            except sft.RowError as exc:
                problems.append(f"{name} {rec.where()}: {exc.reason}: {_named(exc, plan)}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(
            problems[0] + more,
            hint="every row needs a user turn and an assistant answer; "
            "`hwkit data check SOURCE --rejects R` lists them",
        )
    return name, examples


def _named(exc: sft.RowError, plan: sft.SftPlan) -> str:
    """The row error with the column it is about, when the message does not name it."""
    column = {
        "empty_answer": plan.assistant or plan.messages or ",".join(plan.targets or []),
        "empty_prompt": plan.user or plan.messages,
    }.get(exc.reason)
    return f"field {column!r}: {exc.detail}" if column else exc.detail


def _row_hash(row: dict[str, Any]) -> str:
    text = json.dumps(row["messages"], sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def attempt_seed(seed: int, row: int, kind: str, attempt: int) -> int:
    """A seed for one attempt, the same on every run (no Python hash randomisation)."""
    text = f"{seed}:{row}:{kind}:{attempt}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "big") & 0x7FFFFFFF


# -- generation -----------------------------------------------------------------------------------
def _clean(text: str) -> str:
    text = _LABEL.sub("", text.strip()).strip()
    if len(text) >= 2 and text[0] in "\"'\u201c" and text[-1] in "\"'\u201d":
        text = text[1:-1].strip()
    return text


def _first_message(text: str) -> str:
    """The first non-empty line; a question ends at its first question mark."""
    lines = [ln for ln in _clean(text).splitlines() if ln.strip()]
    first = _clean(lines[0]) if lines else ""
    if "?" in first:
        first = first[: first.index("?") + 1]
    return first


def _complete(text: str, truncated: bool) -> str:
    """A reply cut by max_new_tokens loses its unfinished last sentence."""
    text = _clean(text)
    if not truncated or text.endswith("?"):
        return text
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else ""


def _transcript(messages: Sequence[Message]) -> str:
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in messages if m["role"] in names)


def _ask(
    generator: Generator,
    messages: list[Message],
    settings: AugmentSettings,
    seed: int,
    calls: list[int],
) -> tuple[str, bool]:
    """(text, truncated) of one request, sampled with ``seed``."""
    from hwkit.inference import GenerationParams

    prompt = generator.prompt(messages, settings.max_new_tokens)
    params = GenerationParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature or None,
        seed=seed,
    )
    calls[0] += 1
    done = generator.generate(prompt, params)
    return done.text, done.finish_reason == "length"


def generate_one(
    generator: Generator,
    example: Example,
    kind: str,
    settings: AugmentSettings,
    seed: int,
    calls: list[int],
) -> dict[str, Any]:
    """One attempt's raw result: the new user turn and reply (possibly empty), and whether
    either was cut short; ``error`` when the prompt did not fit."""
    msgs: list[Message] = example.row["messages"]
    system = [m for m in msgs[:1] if m["role"] == "system"]
    answer = msgs[-1]["content"]
    question = next((m["content"] for m in reversed(msgs[:-1]) if m["role"] == "user"), "")
    out: dict[str, Any] = {"user": "", "reply": "", "truncated": False, "error": None}
    try:
        if kind == "followup":
            ask = PROMPTS["followup_question"].format(question=question, answer=answer)
            raw, cut = _ask(generator, [{"role": "user", "content": ask}], settings, seed, calls)
            if not _take_user(out, raw, cut):
                return out
            grounded = PROMPTS["followup_answer"].format(answer=answer, question=out["user"])
            reply_msgs = [*system, {"role": "user", "content": grounded}]
        else:
            ask = PROMPTS["continuation_user"].format(transcript=_transcript(msgs))
            raw, cut = _ask(generator, [{"role": "user", "content": ask}], settings, seed, calls)
            if not _take_user(out, raw, cut):
                return out
            reply_msgs = [*msgs, {"role": "user", "content": out["user"]}]
        raw, cut = _ask(generator, reply_msgs, settings, seed + 1, calls)
        out["raw_reply"] = raw
        out["reply"] = _complete(raw, cut)
        out["truncated"] = cut and not out["reply"]
    except UsageError as exc:  # the prompt does not fit the planned context
        out["error"] = exc.one_line()
    return out


def _take_user(out: dict[str, Any], raw: str, cut: bool) -> bool:
    """Set the new user turn from the raw text; False when there is none (or it was cut
    off mid-sentence by max_new_tokens)."""
    out["raw_user"] = raw
    user = _first_message(raw)
    if cut and "\n" not in raw.strip() and not user.endswith(("?", ".", "!")):
        out["truncated"] = True
        user = ""
    out["user"] = user
    return bool(user)


def new_row(example: Example, kind: str, user: str, reply: str) -> dict[str, Any]:
    """The training row an accepted attempt becomes (see the module docstring)."""
    msgs: list[Message] = example.row["messages"]
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    if kind == "followup":
        system = [dict(m) for m in msgs[:1] if m["role"] == "system"]
        return {"messages": [*system, *turns]}
    return {"messages": [*(dict(m) for m in msgs), *turns]}


# -- the partial file -----------------------------------------------------------------------------
Key = tuple[int, str, int]


def read_partial(path: Path, fingerprint: dict[str, Any], hashes: list[str]) -> dict[Key, Any]:
    """Attempts already made with these settings for these rows; a broken last line (a
    killed write) is dropped; a file made with other settings is refused."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    entries: list[dict[str, Any]] = []
    broken = False
    for n, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1:
                raise ConfigError(
                    f"{path}: line {n + 1} is not JSON", hint="delete the file to start over"
                ) from None
            broken = True
    if broken or (lines and not path.read_bytes().endswith(b"\n")):
        text = "".join(line + "\n" for line in lines[: len(entries)])
        path.write_text(text, encoding="utf-8")  # drop the half-written line before appending
    if not entries:
        return {}
    header = entries[0].get("augment_partial")
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: not an augment partial file", hint="delete it or pick --out")
    for name, value in fingerprint.items():
        if header.get(name) != value:
            raise UsageError(
                f"{path} was made with {name} {header.get(name)!r}, this run uses {value!r}",
                hint=f"delete {path.name} to generate again, or rerun with the same {name}",
            )
    done: dict[Key, Any] = {}
    for entry in entries[1:]:
        row = entry.get("source_row")
        if isinstance(row, int) and row < len(hashes) and entry.get("source_hash") == hashes[row]:
            done[(row, entry["kind"], entry["attempt"])] = entry
    return done


class PartialWriter:
    """Appends one attempt per line, flushed and synced, so a kill loses at most one."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.is_file() or path.stat().st_size == 0
        self.fh = path.open("a", encoding="utf-8")
        if fresh:
            self.write({"augment_partial": fingerprint})

    def write(self, entry: dict[str, Any]) -> None:
        self.fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


# -- filters --------------------------------------------------------------------------------------
def repetition(text: str, n: int = REPEAT_NGRAM) -> float:
    """The share of ``text``'s characters (in words, case and punctuation aside) covered by
    word n-grams that occur more than once: Gopher's duplicate n-gram fraction."""
    from collections import Counter

    words = normalise(text).split()
    if len(words) <= n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = [True] * n
    total = sum(len(w) for w in words)
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c) / total


def _text_problem(
    entry: dict[str, Any], example: Example, kind: str, settings: AugmentSettings
) -> tuple[str, str] | None:
    """(reason, detail) when the raw generation is unusable before any embedding."""
    if entry.get("error"):
        return "too_long", str(entry["error"])
    user, reply = entry.get("user", ""), entry.get("reply", "")
    if entry.get("truncated") and not (user.strip() and reply.strip()):
        what = "reply" if user.strip() else "user turn"
        return "truncated", f"the {what} was cut by --max-new-tokens before a sentence ended"
    if not user.strip():
        return "empty", "the generated user turn is empty"
    if not reply.strip():
        return "empty", "the generated reply is empty"
    if word_count(user) < MIN_USER_WORDS:
        return "too_short", f"user turn of {word_count(user)} words (< {MIN_USER_WORDS})"
    if word_count(reply) < MIN_REPLY_WORDS:
        return "too_short", f"reply of {word_count(reply)} words (< {MIN_REPLY_WORDS})"
    msgs = example.row["messages"]
    prompt = _transcript(msgs) + "\n" + "\n".join(PROMPTS.values())
    if normalise(user) in normalise(prompt):
        return "echo", "the user turn repeats its prompt"
    if normalise(reply) in normalise(prompt + "\n" + user):
        return "echo", "the reply repeats its prompt"
    if settings.require_question and kind == "followup" and not user.rstrip().endswith("?"):
        return "not_a_question", "the follow-up user turn does not end in a question mark"
    repeated = repetition(f"{user}\n{reply}")
    if repeated > settings.max_repetition:
        return (
            "repetitive",
            f"repeated {REPEAT_NGRAM}-word sequences cover {repeated:.0%} of the new turns "
            f"(> --max-repetition {settings.max_repetition:g})",
        )
    return None


@dataclass
class _Candidate:
    row: int
    kind: str
    attempt: int
    entry: dict[str, Any]
    record: dict[str, Any]
    vector: Any = None
    coherence: float | None = None


def _reject(c: _Candidate, source: str, reason: str, detail: str, score: float | None) -> Any:
    out = Reject(reason, record=c.record, source=source, row=c.row, detail=detail).to_dict()
    out.update(kind=c.kind, attempt=c.attempt, seed=c.entry.get("seed"), score=score)
    return out


def _filter(
    examples: list[Example],
    candidates: list[_Candidate],
    embedder: Embedder | None,
    settings: AugmentSettings,
    source: str,
) -> tuple[list[_Candidate], list[dict[str, Any]]]:
    """Coherence, then near-duplicates, in candidate order."""
    import numpy as np

    kept: list[_Candidate] = []
    rejects: list[dict[str, Any]] = []
    if not candidates:
        return kept, rejects
    assert embedder is not None
    answers = [ex.row["messages"][-1]["content"] for ex in examples]
    src_vecs = np.asarray(embedder.embed(answers), dtype=np.float32)
    new_texts = [f"{c.entry['user']}\n{c.entry['reply']}" for c in candidates]
    new_vecs = np.asarray(embedder.embed(new_texts), dtype=np.float32)
    index = dedupe_mod.ShingleIndex(settings.near_duplicate)
    for j, answer in enumerate(answers):
        index.add(f"s{j}", index.sketch(answer))
    kept_vecs: list[Any] = []
    nd = settings.near_duplicate
    for c, vec in zip(candidates, new_vecs, strict=True):
        c.vector = vec
        c.coherence = round(float(src_vecs[c.row] @ vec), 4)
        c.record["provenance"]["coherence"] = c.coherence
        if c.coherence < settings.min_coherence:
            detail = f"coherence {c.coherence:.2f} < --min-coherence {settings.min_coherence:g}"
            rejects.append(_reject(c, source, "incoherent", detail, c.coherence))
            continue
        sims = src_vecs @ vec
        j = int(np.argmax(sims))
        hit: tuple[str, float] | None = None
        if sims[j] >= nd:
            hit = (f"cosine {sims[j]:.2f} with source row {j}", float(sims[j]))
        if hit is None and kept_vecs:
            ksims = np.stack(kept_vecs) @ vec
            k = int(np.argmax(ksims))
            if ksims[k] >= nd:
                other = kept[k]
                hit = (
                    f"cosine {ksims[k]:.2f} with kept {other.kind} of row {other.row} "
                    f"(attempt {other.attempt})",
                    float(ksims[k]),
                )
        if hit is None:
            sketch = index.sketch(c.entry["reply"])  # matched here, indexed if kept
            match = index.match(sketch)
            if match is not None:
                key, score = match
                what = (
                    f"source row {key[1:]}"
                    if key.startswith("s")
                    else "kept " + key.split("|", 1)[1]
                )
                hit = (f"reply Jaccard {score:.2f} with {what}", score)
        if hit is not None:
            detail = f"{hit[0]} >= --near-duplicate {nd:g}"
            rejects.append(_reject(c, source, "near_duplicate", detail, round(hit[1], 4)))
            continue
        kept.append(c)
        kept_vecs.append(vec)
        index.add(f"g{len(kept)}|{c.kind} of row {c.row} (attempt {c.attempt})", sketch)
    return kept, rejects


# -- the run --------------------------------------------------------------------------------------
def augment(
    cfg: DataConfig,
    out: Path,
    settings: AugmentSettings,
    *,
    runtime: Runtime | None = None,
) -> AugmentSummary:
    """Generate, filter and write ``out`` (source rows, then kept generations), its rejects
    and the partial file; see the module docstring. Bad input raises before anything is
    written."""
    from hwkit import jobs

    start = time.perf_counter()
    settings.validate()
    source, examples = source_examples(cfg, settings.limit)
    out = out.expanduser()
    if out.suffix != ".jsonl":
        raise UsageError(f"--out {out} must end in .jsonl", hint="e.g. --out augmented.jsonl")
    fingerprint = settings.fingerprint()
    hashes = [_row_hash(ex.row) for ex in examples]
    partial = partial_path(out)
    done = read_partial(partial, fingerprint, hashes)

    # source rows that repeat an earlier one are not augmented twice
    ids = {id(ex): i for i, ex in enumerate(examples)}
    unique = dedupe_mod.near(list(examples), Ledger(), settings.near_duplicate)
    augmentable = sorted(ids[id(ex)] for ex in unique)
    duplicates = sorted(set(range(len(examples))) - set(augmentable))

    generator: Generator | None = None
    calls = [0]
    reused = 0
    writer = PartialWriter(partial, fingerprint)
    try:
        for i in augmentable:
            for kind, attempt in settings.plan():
                if (i, kind, attempt) in done:
                    reused += 1
                    continue
                if generator is None:
                    generator = jobs.load_generator(
                        settings.model,
                        runtime=runtime,
                        context=CONTEXT,
                        runtimes=settings.runtimes,
                    )
                seed = attempt_seed(settings.seed, i, kind, attempt)
                raw = generate_one(generator, examples[i], kind, settings, seed, calls)
                entry = {
                    "source_row": i,
                    "kind": kind,
                    "attempt": attempt,
                    "seed": seed,
                    "source_hash": hashes[i],
                    **raw,
                }
                writer.write(entry)
                done[(i, kind, attempt)] = entry
                log.debug("augment.attempt", row=i, kind=kind, attempt=attempt)
    finally:
        writer.close()
        if generator is not None:
            generator.close()

    candidates: list[_Candidate] = []
    rejects: list[dict[str, Any]] = []
    for i in augmentable:
        for kind, attempt in settings.plan():
            entry = done[(i, kind, attempt)]
            ex = examples[i]
            record = new_row(ex, kind, entry.get("user", ""), entry.get("reply", ""))
            if ex.category:
                record["category"] = ex.category
            record["provenance"] = {
                "kind": kind,
                "source_row": i,
                "attempt": attempt,
                "model": settings.model,
                "seed": entry["seed"],
            }
            c = _Candidate(i, kind, attempt, entry, record)
            problem = _text_problem(entry, ex, kind, settings)
            if problem is not None:
                rejects.append(_reject(c, source, problem[0], problem[1], None))
            else:
                candidates.append(c)
    embedder = None
    if candidates:
        embedder = jobs.load_embedder("torch", settings.embedder_model, runtime=runtime)
    kept, filtered = _filter(examples, candidates, embedder, settings, source)
    rejects.extend(filtered)
    rejects.sort(key=lambda r: (r["row"], settings.kinds.index(r["kind"]), r["attempt"]))

    rows: list[dict[str, Any]] = []
    for i, ex in enumerate(examples):
        row = dict(ex.row)
        if ex.category:
            row["category"] = ex.category
        row["provenance"] = {"kind": "source", "row": i}
        rows.append(row)
    rows.extend(c.record for c in kept)
    write_jsonl_atomic(rejects_path(out), rejects)
    write_jsonl_atomic(out, rows)

    by_kind = {k: sum(1 for c in kept if c.kind == k) for k in settings.kinds}
    summary = AugmentSummary(
        source=source,
        out=str(out),
        rejects=str(rejects_path(out)),
        partial=str(partial),
        rows_in=len(examples),
        duplicate_sources=duplicates,
        attempts=len(augmentable) * settings.per_row,
        reused=reused,
        generator_calls=calls[0],
        kept=len(kept),
        kept_by_kind=by_kind,
        rejected=len(rejects),
        rejected_by_reason=count_by_reason(Reject(r["reason"]) for r in rejects),
        rows_out=len(rows),
        seconds=round(time.perf_counter() - start, 2),
        settings={**asdict(settings), "runtimes": list(settings.runtimes)},
    )
    log.info(
        "data.augmented",
        source=source,
        rows=summary.rows_in,
        kept=summary.kept,
        rejected=summary.rejected,
        seconds=summary.seconds,
    )
    return summary
