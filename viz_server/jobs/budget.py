"""What a job process may hold: the job memory budget (``VIZ_SERVER_JOB_MEMORY_MB``) as a hard limit on its data,
set by every process that runs jobs (the embedded runner's job processes, Celery's pool processes)."""

from __future__ import annotations


def limit_memory(budget: int) -> None:
    """The job's memory budget as a hard limit on this process's data (heap and private mappings: RLIMIT_DATA),
    the backstop for what the model's cost estimate cannot see: an allocation past it fails (MemoryError, or the
    library's own out-of-memory error) and the job fails with a sentence naming the budget, instead of the machine's
    OOM killer choosing a victim. Never below what the imports already use."""
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = max(budget, _data_bytes() + 2**28)
        resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    except (ImportError, ValueError, OSError):  # not Linux, or a limit the system refuses: the estimate alone
        pass


def _data_bytes() -> int:
    """This process's data segment now (VmData), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0
