"""The batchpump exception tree.

Split by whose fault it is, so a caller can decide what to do without string matching::

    BatchpumpError
    ├── UsageError                  the caller's input or configuration; never retried
    │   ├── InputError              bad input lines (each problem names its line and the fix)
    │   ├── ClosedError             a Pump or Run used after it was closed
    │   └── ResultsFileError        the results file is missing, cut short or another run's
    ├── ProviderError               the provider answered with an error status
    │   ├── ConfigurationError      an answer every shard would get (a setting is wrong)
    │   ├── BadRequestError         400 / 422
    │   ├── AuthenticationError     401 / 403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409
    │   ├── RateLimitedError        429
    │   └── ProviderUnavailableError  5xx
    ├── TransportError              no usable answer: connection, protocol, timeout
    │   ├── ConnectError
    │   ├── ProtocolError           truncated or malformed body, wrong content type
    │   │   └── MalformedOutputError  lines of a result file that cannot be read
    │   └── TransportTimeoutError   (also a builtin ``TimeoutError``)
    ├── JournalError                the local journal cannot be used
    │   ├── JournalLockedError      another process holds it
    │   └── JournalCorruptError     unreadable or from an unknown schema
    └── BatchpumpInternalError      a broken invariant: a bug, please report it

A failed *line* is not an exception: it is an ``Errored`` result (see ``_models``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchpumpError",
    "BatchpumpInternalError",
    "ClosedError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "InputError",
    "InputProblem",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
    "MalformedLine",
    "MalformedOutputError",
    "NotFoundError",
    "ProtocolError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ResultsFileError",
    "TransportError",
    "TransportTimeoutError",
    "UsageError",
]

#: How many characters of a response body an error keeps (keys are redacted before that).
BODY_EXCERPT_CHARS: Final = 500
#: How many input problems an ``InputError`` lists in its message.
MAX_LISTED_PROBLEMS: Final = 20


class BatchpumpError(Exception):
    """Root of every exception batchpump raises on purpose."""


class UsageError(BatchpumpError, ValueError):
    """The caller's input or configuration is wrong. Retrying will not help."""


class InputProblem:
    """One bad input line: where it is, what is wrong, and how to fix it."""

    __slots__ = ("hint", "line", "message")

    def __init__(self, line: int, message: str, hint: str = "") -> None:
        self.line = line
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line > 0 else "input"
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return f"InputProblem(line={self.line!r}, message={self.message!r}, hint={self.hint!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InputProblem):
            return NotImplemented
        return (self.line, self.message, self.hint) == (other.line, other.message, other.hint)

    def __hash__(self) -> int:
        return hash((self.line, self.message, self.hint))


class InputError(UsageError):
    """The input has bad lines; nothing was sent to the provider.

    Attributes:
        path: the input file, or ``"<iterable>"``.
        problems: every problem found (the message lists the first few).
    """

    def __init__(self, path: str, problems: list[InputProblem]) -> None:
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        if any(p.line > 0 for p in problems):
            advice = (
                'Fix the lines above, or pass on_invalid="skip" (CLI: --on-invalid skip) '
                "to turn them into Rejected results."
            )
        else:  # the input as a whole (empty, unreadable): no line to skip
            advice = "Fix the input above."
        super().__init__(
            f"{path}: {count} input {noun}, nothing was uploaded:\n{shown}{tail}\n{advice}"
        )

    @property
    def lines(self) -> list[int]:
        return [p.line for p in self.problems]


class ClosedError(UsageError, RuntimeError):
    """A Pump, Run or client was used in a state that does not allow it."""


class ResultsFileError(UsageError):
    """The results file cannot be appended to as the journal says: it is missing or shorter
    than its committed length (never padded; ``Pump.rebuild_results`` rebuilds it), or it
    belongs to another run (``overwrite=True`` takes it)."""


class ProviderError(BatchpumpError):
    """The provider answered with an error status.

    Attributes:
        provider: the provider's name (``"openai"``...).
        status: the HTTP status.
        request_id: the provider's request id header, if any.
        retry_after: seconds the provider asked us to wait, if it said.
        body: a redacted excerpt of the response body.
        code: the provider's error code or type, if the body had one.
        url: the URL called (``"POST https://..."``, redacted), when the HTTP layer knows it.
    """

    url: str | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: str = "",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body[:BODY_EXCERPT_CHARS]
        self.code = code

    def __str__(self) -> str:
        base = super().__str__()
        rid = f", request_id={self.request_id}" if self.request_id else ""
        return f"{self.provider} HTTP {self.status}{rid}: {base}"


class BadRequestError(ProviderError):
    """400 or 422: the request was wrong. Never retried."""


class AuthenticationError(ProviderError):
    """401 or 403: the key is missing, wrong or lacks permission. Never retried."""


class NotFoundError(ProviderError):
    """404: no such file, batch or job."""


class ConflictError(ProviderError):
    """409: the object is in a state that does not allow the call."""


class RateLimitedError(ProviderError):
    """429: too many requests or tokens; ``retry_after`` says how long to wait."""


class ProviderUnavailableError(ProviderError):
    """5xx: the provider failed or is overloaded. Retried with backoff."""


class ConfigurationError(ProviderError):
    """The provider gave an answer every shard of the run would get: a route that does not
    exist (404 on a collection), a key refused (401/403), a 400 naming a setting. The run stops
    without settling any line; it resumes once the setting is fixed.

    Attributes:
        setting: the flag or variable to fix (``"--base-url / OPENAI_BASE_URL"``...).
    """

    def __init__(self, cause: ProviderError, *, setting: str) -> None:
        where = f" calling {cause.url}" if cause.url else ""
        super().__init__(
            f"{cause}{where}. Check {setting}. This answer would fail every batch, so the run "
            "stopped with no line settled; fix it and resume the run (or run the same command "
            "again)",
            provider=cause.provider,
            status=cause.status,
            request_id=None,
            body=cause.body,
            code=cause.code,
        )
        self.setting = setting
        self.url = cause.url
        self.cause = cause

    def __str__(self) -> str:
        return Exception.__str__(self)


def configuration_problem(exc: ProviderError, *, creating: bool = False) -> bool:
    """Whether ``exc`` is an answer every shard would get the same way (a wrong setting).

    401/403 (the key), a 404 on anything but a create (a collection route that does not exist:
    a base URL without its path; a create's 404 may be an expired upload), and a 400 whose
    message names a setting the user gave (project, workflow, model, configuration, endpoint,
    URL) are; a 400 about the input file is not.
    """
    if exc.status in (401, 403):
        return True
    if exc.status == 404:
        return not creating
    if exc.status in (400, 422):
        text = f"{exc.code or ''} {exc}".lower()
        return any(word in text for word in _SETTING_WORDS)
    return False


#: Words in a 400 that name a setting rather than a line or the file.
_SETTING_WORDS: Final = (
    "project",
    "workflow",
    "work_flow",
    "configuration",
    "config_id",
    "endpoint",
    "api version",
    "api-version",
    "deployment",
    "unknown url",
    "invalid url",
    "organization",
)


class TransportError(BatchpumpError):
    """No usable answer arrived: the connection failed, stalled or broke the protocol."""


class ConnectError(TransportError):
    """Could not connect, or the connection was reset."""


class ProtocolError(TransportError):
    """The answer was truncated, malformed, or not what the endpoint returns."""


class MalformedLine:
    """One line of a provider's result file that does not read as a result.

    Attributes:
        number: its line number in the file (1-based).
        custom_id: the ``custom_id`` found in its bytes, if one could be.
        problem: what is wrong with it.
    """

    __slots__ = ("custom_id", "number", "problem")

    def __init__(self, number: int, custom_id: str | None, problem: str) -> None:
        self.number = number
        self.custom_id = custom_id
        self.problem = problem

    def __repr__(self) -> str:
        return f"MalformedLine({self.number!r}, {self.custom_id!r}, {self.problem!r})"


class MalformedOutputError(ProtocolError):
    """A result file had lines that do not read as results; raised once the file was read to
    its end, after every good line was yielded. The collector downloads it again a few times,
    then settles those lines as ``Errored`` (``code="malformed_output"``).

    Attributes:
        lines: the malformed lines.
    """

    def __init__(self, message: str, lines: list[MalformedLine]) -> None:
        super().__init__(message)
        self.lines = lines


class TransportTimeoutError(TransportError, TimeoutError):
    """No answer in time. Also a builtin ``TimeoutError``."""


class JournalError(BatchpumpError):
    """The local journal cannot be opened, read or written."""


class JournalLockedError(JournalError):
    """Another process holds the journal."""


class JournalCorruptError(JournalError):
    """The journal is unreadable or from an unknown schema; nothing was resubmitted."""


class BatchpumpInternalError(BatchpumpError):
    """A broken invariant inside batchpump. This is a bug: please report it."""


def unwrap_group(exc: BaseException) -> BaseException:
    """A task group's single failure, unwrapped (nested groups too); several stay grouped.

    Public calls use it so a caller catches ``InputError``, not ``ExceptionGroup[InputError]``.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
