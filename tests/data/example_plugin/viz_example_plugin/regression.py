"""An output decoder for a task viz-server does not know: one regressed value per image (N x 1), such as an age
estimator. Models say so with the metadata ``task = regression`` (or the user sets the task)."""

from viz_server import hookimpl
from viz_server.tasks import OutputDecoder


class RegressedValue(OutputDecoder):
    name = "regressed_value"
    task = "regression"
    summary = "One regressed value per image (N x 1)."
    priority = -1  # asked after the built-in decoders: an N x 1 output is read as regression only when the task says so

    def recognizes(self, output):
        return len(output.shape) == 2 and output.shape[1] == 1

    def decode(self, outputs, spec):
        return [{"value": round(float(row[0]), 6)} for row in outputs]


@hookimpl
def register_output_decoders():
    return [RegressedValue()]
