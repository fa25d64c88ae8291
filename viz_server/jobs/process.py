"""Entry point of one job process: ``python -m viz_server.jobs.process JOB_ID``.

The embedded runner starts one of these per job, so a model that crashes onnxruntime or torch takes down
only this process. Settings come from the environment the runner passes on.
"""

from __future__ import annotations

import sys
import warnings

from viz_server.config import load_settings
from viz_server.jobs.execute import execute_job
from viz_server.store import Store


def main() -> int:
    warnings.simplefilter("ignore")
    job_id = int(sys.argv[1])
    status = execute_job(Store(load_settings()), job_id)
    return 0 if status in ("done", "failed", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
