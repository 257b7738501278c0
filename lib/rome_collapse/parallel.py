"""Independent pieces of work (v* batches, measured edits) side by side on CPU threads, each thread with its own
copy of the model.

Why threads: torch releases Python's lock inside its operators, so threads run the model's matrix products at
the same time; and on a CPU with few cores two one-thread workers get more done than one worker with two torch
threads (on this workplace's 2-core CPU, ME-PPL-50 perplexity: 3.0 s per measurement with two threads of one
torch thread each, 3.7 s with one two-thread worker). Run it with one torch thread per worker
(``OMP_NUM_THREADS=1``, as ``make reproduce`` does); on a GPU, keep ``workers=1``.

Why copies: an edit is applied to the weights in place, and a fast tokenizer must not be shared between threads.
The first worker uses the bundle itself; the others a deep copy of its model and tokenizer (the same weights,
hyper-parameters and cache identity), made once per call.
"""
from __future__ import annotations

import copy
import dataclasses
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from tqdm.auto import tqdm

from .models import Bundle

Item = TypeVar("Item")
Result = TypeVar("Result")


def model_copies(bundle: Bundle, n: int) -> list[Bundle]:
    """``bundle`` itself and ``n`` − 1 bundles with a deep copy of its model and tokenizer."""
    return [bundle] + [dataclasses.replace(bundle, model=copy.deepcopy(bundle.model),
                                           tokenizer=copy.deepcopy(bundle.tokenizer)) for _ in range(n - 1)]


def map_on_copies(bundle: Bundle, fn: Callable[[Bundle, Item], Result], items: Iterable[Item], workers: int = 1,
                  desc: str | None = None, progress: bool = True) -> list[Result]:
    """``[fn(b, item) for item in items]`` in the items' order, where ``b`` is ``bundle`` or a copy of it, on
    ``workers`` threads (at most one per item). ``fn`` must leave the weights of the bundle it gets as it found them
    (``rome.applied`` does). The first error is raised once the running items have finished."""
    items = list(items)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    workers = min(workers, len(items)) or 1
    with tqdm(total=len(items), desc=desc, disable=not progress or not items) as bar:
        if workers == 1:
            results = []
            for item in items:
                results.append(fn(bundle, item))
                bar.update()
            return results
        free: queue.SimpleQueue[Bundle] = queue.SimpleQueue()
        for b in model_copies(bundle, workers):
            free.put(b)

        def run(item: Item) -> Result:
            b = free.get()  # a bundle no other thread is using
            try:
                return fn(b, item)
            finally:
                free.put(b)
                bar.update()

        with ThreadPoolExecutor(workers, thread_name_prefix="rome-worker") as pool:
            return list(pool.map(run, items))
