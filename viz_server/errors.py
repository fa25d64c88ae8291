"""The one exception type that carries a user-facing sentence.

Every stage that meets bad input (a hostile model, an odd image, a wrong parameter) raises
``UserError`` with one sentence saying what is wrong and what to do. The CLI prints it and exits 2;
the web layer turns it into a 4xx page or JSON error. Anything else that escapes is a bug.
"""


class UserError(Exception):
    """Bad input, explained in one sentence for the person who supplied it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field  # the form field (a parameter's name) the sentence is about, when there is one

    def __str__(self) -> str:
        return self.message


class NotFound(LookupError):
    """A stored thing (model, job, image, report, artifact) that does not exist; the web layer answers 404."""


class Cancelled(Exception):
    """Raised inside a technique when the user cancelled its job."""
