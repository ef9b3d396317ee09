"""The build pass (package `shards`, not `build`: tools skip folders named like build output): a recipe's phases -> datatrove pipelines -> a store of tokenized shards.

    lower.py     sources -> one datatrove pipeline each (reader, filter, tokenizer step) + store keys
    tokenize.py  the tokenizer step (batched encode, numpy arrays)
    writer.py    the datatrove-format shard writer (the format itself: mixc/store.py)
    run.py       the build: executors (slurm here), crash-safe finalize, phase manifests
    workers.py   running tasks locally or on Ray: the dispatch step, worker supervision, their output

`build(...)` is imported lazily: readers of the store (the loader, the report) should not pay
for importing datatrove.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import BuildResult


def build(*args: Any, **kwargs: Any) -> BuildResult:
    """See `mixc.shards.run.build`."""
    from .run import build as run_build  # datatrove: heavy, only when a build runs (see above)

    return run_build(*args, **kwargs)
