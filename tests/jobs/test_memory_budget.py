"""A job's memory budget (VIZ_SERVER_JOB_MEMORY_MB): a model whose cost the graph declares is refused at its
inspection; one whose size only its input decides meets the job process's hard limit (RLIMIT_DATA) and fails
with a sentence, its process well under the budget, instead of taking the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from viz_server.config import load_settings
from viz_server.store import ModelRecord, Store

sys.path.insert(0, str(Path(__file__).parents[1] / "model"))


def runtime_sized() -> bytes:
    """A classifier (N x 3 x 64 x 64 -> N x 3) that also fills a tensor of (1 + max |x|) * 1e9 floats: its size is
    known only when a picture arrives."""
    const = numpy_helper.from_array
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
        helper.make_node("Abs", ["top"], ["top_abs"]),
        helper.make_node("Add", ["top_abs", "one"], ["factor"]),
        helper.make_node("Mul", ["factor", "billion"], ["count_f"]),
        helper.make_node("Cast", ["count_f"], ["count"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["count", "one_dim"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=const(np.array([1.0], np.float32))),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["pooled", "nothing"], ["y"]),
    ]
    initializers = [
        const(np.float32(1), "one"),
        const(np.float32(1e9), "billion"),
        const(np.array([1], np.int64), "one_dim"),
        const(np.float32(0), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "runtime-sized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def inspect_in_a_job_process(tmp_path, data: bytes, budget_mb: int) -> tuple[ModelRecord, int]:
    """Store the model, run its inspection in a job process (``python -m viz_server.jobs.process``) under the
    budget; the model record after it, and the process's peak resident memory in MiB."""
    env = {**os.environ, "VIZ_SERVER_DATA": str(tmp_path), "VIZ_SERVER_JOB_MEMORY_MB": str(budget_mb)}
    store = Store(load_settings(data_dir=tmp_path))
    record, job = store.add_model("hostile", data)
    assert store.db.claim_job(job.id)
    script = "import resource, runpy, sys; sys.argv = ['process', sys.argv[1]]\ntry:\n    runpy.run_module('viz_server.jobs.process', run_name='__main__')\nexcept SystemExit:\n    pass\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    finished = subprocess.run([sys.executable, "-c", script, str(job.id)], env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return store.db.get(ModelRecord, record.id), int(finished.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_picture_sized_tensor_meets_the_job_processes_limit_and_fails_with_a_sentence(tmp_path):
    model, peak = inspect_in_a_job_process(tmp_path, runtime_sized(), 1200)
    assert model.status == "failed" and "needs more memory than this process may use" in model.error, model.error
    assert "VIZ_SERVER_JOB_MEMORY_MB" in model.error and "\n" not in model.error
    # resident memory, torch's shared libraries included (960-1,514 MiB measured); the tensor alone would be 4,000+ MiB
    assert peak < 2500, f"the job process peaked at {peak} MiB under a 1,200 MiB budget"


@pytest.mark.slow
def test_a_model_that_declares_gigabytes_is_refused_at_inspection(tmp_path):
    from test_cost import constant_of_shape

    model, peak = inspect_in_a_job_process(tmp_path, constant_of_shape().SerializeToString(), 2048)
    assert model.status == "failed" and "needs about" in model.error and "budget of 2,048 MiB" in model.error, model.error
    assert peak < 2500  # the imports' resident memory; the declared tensor is 4,800 MiB
