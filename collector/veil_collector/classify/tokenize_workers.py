"""Tokenizing in worker processes: each batch is split over processes that tokenize on one core each.

Why: with the tokenizer in the scoring process, its batch call spreads each batch over every core through
the Rust backend's thread pool, and its Python half (building one ``Encoding`` object per text, reading
its ids) holds the GIL that the thread launching the model's forward passes needs. On the H200 the two
halves of a scoring pass, each alone, ran at 12,903 (tokenizing) and 10,817 (forward passes) texts/s, yet
together at 7,673 (``bench/results/classify_cuda_stages.md``). Workers take both off the scoring process:
each tokenizes its slice single-threaded and sends back two flat arrays (lengths and ids), which the
parent pads with a few vectorized numpy operations.

What runs where: :class:`TokenizerWorkers` starts ``python -m veil_collector.classify.tokenize_workers FD``
per worker (a plain subprocess, not ``multiprocessing``: the classifier's own process is a daemonic
``multiprocessing`` child, which may not start ``multiprocessing`` children, and a spawned
``multiprocessing`` child would re-import the collector's main module). The worker imports numpy and
``tokenizers`` only, receives the backends as their JSON (the truncation setting travels inside it), and
serves requests on its end of a socket pair until the parent closes it. A parent that dies closes it too,
so no worker outlives its parent.

This module imports no torch: :func:`encode_rows` and :func:`flatten` are shared by the workers and by
:class:`~veil_collector.classify.encoding.BatchEncoder`'s in-process path.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# The ASCII control characters BERT's clean-text step removes (tab, newline and carriage return it turns
# into spaces instead).
_REMOVED_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_READY_TIMEOUT_S = 60.0  # a worker imports numpy and tokenizers and parses the vocabulary: about 0.3 s
_REPLY_TIMEOUT_S = 60.0  # one slice of one batch: milliseconds; a worker this late is hung

EncodeBatch = Callable[[list[str]], list[Any]]


class TokenizerWorkerError(RuntimeError):
    """A tokenizer worker failed to start, exited, or did not answer in time."""


def batch_entry_point(backend: Any) -> EncodeBatch:
    """``encode_batch_fast`` where the backend has it (tokenizers 0.21 and later), else ``encode_batch``."""
    return getattr(backend, "encode_batch_fast", backend.encode_batch)


def plain_ascii(text: str) -> bool:
    """Whether BERT's normalizer would only lowercase ``text`` (see ``encoding.py``'s docstring)."""
    return text.isascii() and _REMOVED_CONTROLS.search(text) is None


def encode_rows(
    texts: Sequence[str], encode_batch: EncodeBatch, encode_ascii: EncodeBatch | None
) -> list[list[int]]:
    """Each text's ids (truncated, not padded): through ``encode_ascii`` where :func:`plain_ascii`, when
    given, else through ``encode_batch``."""
    if encode_ascii is None:
        return [encoding.ids for encoding in encode_batch(list(texts))]
    plain = [plain_ascii(text) for text in texts]
    rows: list[list[int]] = [[] for _ in texts]
    for encode, wanted in ((encode_ascii, True), (encode_batch, False)):
        indices = [i for i, is_plain in enumerate(plain) if is_plain is wanted]
        if indices:
            for i, encoding in zip(indices, encode([texts[i] for i in indices]), strict=True):
                rows[i] = encoding.ids
    return rows


def flatten(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` as ``(lengths, ids)``: int32 arrays, the ids of all rows one after another."""
    lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    return lengths, ids


class TokenizerWorkers:
    """``count`` worker processes that tokenize slices of a batch in parallel. Not thread-safe: one caller
    (the encoder's tokenizing thread) at a time.

    Args:
        backend: the Rust backend to encode with (truncation configured).
        ascii_backend: the lowercase-only copy for plain ASCII texts, or None.
        count: how many workers; each batch is cut into at most this many contiguous slices.

    Raises:
        TokenizerWorkerError: a worker did not start or did not say it was ready within a minute.
    """

    def __init__(self, backend: Any, ascii_backend: Any | None, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1; got {count}")
        setup = (backend.to_str(), ascii_backend.to_str() if ascii_backend is not None else None)
        self._workers: list[tuple[subprocess.Popen[bytes], Connection]] = []
        try:
            for _ in range(count):
                self._workers.append(_start_worker())
            for _, conn in self._workers:
                conn.send(setup)
            for process, conn in self._workers:
                if _receive(conn, _READY_TIMEOUT_S, process) != "ready":
                    raise TokenizerWorkerError(f"tokenizer worker {process.pid} sent no ready message")
        except BaseException:
            self.close()
            raise

    @property
    def count(self) -> int:
        return len(self._workers)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:func:`flatten` of :func:`encode_rows` over ``texts``, computed by the workers.

        Raises:
            TokenizerWorkerError: a worker exited, failed or did not answer within a minute.
        """
        size = -(-len(texts) // len(self._workers))
        slices = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
        busy = self._workers[: len(slices)]
        for (process, conn), part in zip(busy, slices, strict=True):
            try:
                conn.send(part)
            except OSError as exc:  # a worker that exited leaves a broken pipe
                raise TokenizerWorkerError(
                    f"tokenizer worker {process.pid} exited (code {process.poll()}): {exc!r}"
                ) from exc
        replies = [_receive(conn, _REPLY_TIMEOUT_S, process) for process, conn in busy]
        for reply in replies:
            if isinstance(reply, str):
                raise TokenizerWorkerError(f"a tokenizer worker failed: {reply}")
        lengths = [np.frombuffer(reply[0], dtype=np.int32) for reply in replies]
        ids = [np.frombuffer(reply[1], dtype=np.int32) for reply in replies]
        return np.concatenate(lengths), np.concatenate(ids)

    def close(self) -> None:
        """Stops the workers (closing their connections ends them). Idempotent."""
        for process, conn in self._workers:
            conn.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._workers = []


def _start_worker() -> tuple[subprocess.Popen[bytes], Connection]:
    ours, theirs = socket.socketpair()
    # The package's folder on the path: the parent may have found it through sys.path, not an install.
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        # One core per worker: parallelism comes from the workers, not from the backend's thread pool.
        "RAYON_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return process, Connection(ours.detach())


def _receive(conn: Connection, timeout: float, process: subprocess.Popen[bytes]) -> Any:
    try:  # OSError: a connection reset by a worker that died mid-reply reads like EOF
        if not conn.poll(timeout):
            raise TokenizerWorkerError(f"tokenizer worker {process.pid} gave no answer in {timeout:.0f} s")
        return conn.recv()
    except (EOFError, OSError) as exc:
        code = process.poll()
        raise TokenizerWorkerError(f"tokenizer worker {process.pid} exited (code {code})") from exc


def _serve(conn: Connection) -> None:
    """The worker: build the backends, say ready, then answer each slice with its lengths and ids (raw
    int32 bytes) until the parent closes the connection. A failed slice is answered with the error's text."""
    from tokenizers import Tokenizer  # here, not at import: the parent may have no need of it at import

    full, ascii_json = conn.recv()
    encode_batch = batch_entry_point(Tokenizer.from_str(full))
    encode_ascii = batch_entry_point(Tokenizer.from_str(ascii_json)) if ascii_json is not None else None
    conn.send("ready")
    while True:
        try:
            texts = conn.recv()
        except EOFError:  # the parent closed its end, or exited
            return
        try:
            lengths, ids = flatten(encode_rows(texts, encode_batch, encode_ascii))
            conn.send((lengths.tobytes(), ids.tobytes()))
        except Exception as exc:  # the parent learns why and falls back; this worker stays usable
            conn.send(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; EOF ends this loop
    _serve(Connection(int(sys.argv[1])))
