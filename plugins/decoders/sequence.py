"""CTC text recognizers (Graves et al. 2006): N x T x C scores, one class per time step, class 0 the blank.

Decoding is greedy: the best class per step, repeats collapsed, blanks removed. Labels are the characters:
C of them (the blank first), or C - 1 (the blank left out, as PaddleOCR's dictionaries do). A target is
``top1``/``text`` (the decoded text's log-probability along its greedy path: the sum over steps of the
log-softmax of the chosen class) or ``step:T`` (the best class's score at step T).
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server.errors import UserError
from viz_server.objectives import Objective, refuse_target
from viz_server.tasks import OutputDecoder, OutputInfo

BLANK = 0
SEQUENCE_TASKS = ("sequence", "ocr", "text")


def characters(spec, classes: int) -> list[str]:
    labels = list(spec.labels)
    if len(labels) == classes - 1:
        labels = ["<blank>", *labels]
    if len(labels) != classes:
        return ["<blank>"] + [str(index) for index in range(1, classes)]
    return labels


def greedy_text(path: np.ndarray, alphabet: list[str]) -> str:
    """Collapse repeats, drop blanks."""
    kept = [int(c) for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1])]
    return "".join(alphabet[c] if len(alphabet[c]) == 1 else f"[{alphabet[c]}]" for c in kept)


def log_probabilities(outputs):
    """Log-softmax over classes, unless the output already holds probabilities (then their log)."""
    if isinstance(outputs, np.ndarray):
        outputs = torch.from_numpy(outputs.astype(np.float32))
    already = bool(((outputs >= 0) & (outputs <= 1)).all()) and bool(torch.allclose(outputs.sum(-1), torch.ones(()), atol=1e-3))
    return outputs.clamp(min=1e-12).log() if already else torch.log_softmax(outputs, dim=-1)


class CTCSequence(OutputDecoder):
    name = "ctc_greedy"
    task = "sequence"
    summary = "CTC text recognizer N x T x C (blank = class 0), decoded greedily."
    targets = "top1 or text (the decoded text's log-probability), or step:T (the best class at time step T)"
    priority = 10

    def recognizes(self, output: OutputInfo) -> bool:
        """N x T x C with the task declared, a final (log-)softmax over the classes, or steps that follow the input's
        width while the classes stay fixed (found when the model was loaded)."""
        declared = str(output.metadata.get("task", "")).lower() in SEQUENCE_TASKS
        steps_follow_width = len(output.shape) == 3 and output.shape[1] is None and output.shape[2] is not None
        softmax = output.final_op in ("Softmax", "LogSoftmax") or output.activation in ("Softmax", "LogSoftmax")
        return len(output.shape) == 3 and (declared or softmax or steps_follow_width)

    def class_count(self, output):
        return None  # labels may leave the blank out

    def decode(self, outputs, spec):
        alphabet = characters(spec, np.asarray(outputs).shape[-1])
        logs = log_probabilities(np.asarray(outputs)).numpy()
        decoded = []
        for steps in logs:
            path = steps.argmax(-1)
            decoded.append({"text": greedy_text(path, alphabet), "confidence": round(float(np.exp(steps.max(-1).mean())), 6)})
        return decoded

    def suggested_targets(self, spec, output_shape):
        steps = output_shape[1] if len(output_shape) > 1 and isinstance(output_shape[1], int) else 0
        return [("top1", "top1: the decoded text"), *((f"step:{t}", f"time step {t}") for t in range(steps))]

    def objective(self, target, ctx, region=""):
        if str(region or "").strip():
            raise UserError("a region applies to dense outputs; for a text recognizer, use top1 or step:T.")
        return SequenceObjective(target, ctx.model.spec)


class SequenceObjective(Objective):
    """A choice is (the greedy path, the step or None)."""

    def __init__(self, target: str, spec):
        super().__init__(target)
        self.spec = spec
        text = str(target).strip().lower()
        self.step = None
        if text.startswith("step:"):
            try:
                self.step = int(text[5:])
            except ValueError:
                raise refuse_target(target, "sequence", "top1, text or step:T") from None
        elif text not in ("", "top1", "top-1", "predicted", "text"):
            raise refuse_target(target, "sequence", "top1, text or step:T")

    def choose(self, outputs):
        if self.step is not None and not 0 <= self.step < outputs.shape[1]:
            raise UserError(f"step {self.step} is outside the model's {outputs.shape[1]} time steps.")
        self.alphabet = characters(self.spec, outputs.shape[-1])
        return [(path, self.step) for path in log_probabilities(outputs).argmax(-1)]

    def selected(self, outputs, choices):
        logs = log_probabilities(outputs)
        values = []
        for steps, raw, (path, step) in zip(logs, outputs, choices):
            if step is None:
                values.append(steps.gather(1, path.to(steps.device)[:, None]).sum())
            else:
                values.append(raw[step, path[step]])
        return torch.stack(values)

    def probability(self, outputs, choices):
        logs = log_probabilities(np.asarray(outputs))
        values = []
        for steps, (path, step) in zip(logs, choices):
            picked = steps.gather(1, path[:, None])[:, 0]
            values.append(float(picked.mean().exp()) if step is None else float(picked[step].exp()))
        return np.array(values)

    def describe(self, choice):
        path, step = choice
        if step is None:
            return f'the text "{greedy_text(path.numpy(), self.alphabet)}"'
        return f'step {step} ("{self.alphabet[int(path[step])]}")'

    def details(self, choice):
        path, step = choice
        return {"text": greedy_text(path.numpy(), self.alphabet), "step": step}

    def predicted(self, outputs):
        alphabet = characters(self.spec, np.asarray(outputs).shape[-1])
        return [greedy_text(path, alphabet) for path in log_probabilities(np.asarray(outputs)).argmax(-1).numpy()]
