"""How a job's failure is worded, and what it says about the process that ran it (kept free of model code, so
the web process and the runner can read it without importing torch)."""

from __future__ import annotations

INTERNAL_ERROR = "internal error while running the job"
OUT_OF_MEMORY = "the job ran out of memory"
ALLOCATION_FAILURES = ("can't allocate memory", "bad_alloc", "Failed to allocate memory", "out of memory")
"""How torch and onnxruntime word a failed allocation (they raise their own errors, not MemoryError)."""


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (past the process's memory limit, or the machine's)."""
    return isinstance(error, MemoryError) or any(sign in str(error) for sign in ALLOCATION_FAILURES)


def process_may_be_broken(error: str | None) -> bool:
    """Whether a failed job's process may be unfit for the next job: an internal error or memory exhausted (a
    user error, such as a refused image, leaves it as good as new)."""
    return bool(error) and str(error).startswith((INTERNAL_ERROR, OUT_OF_MEMORY))
