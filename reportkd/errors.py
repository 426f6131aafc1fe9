"""Errors and their exit codes: how the ``reportkd`` command line turns an exception into one line.

Exit code 2 is a usage error (a bad flag or value, a missing input file): the user can fix the command. Exit code 1
is a runtime failure (I/O, a corrupt or truncated file, the network): the command was right, something around it
was not. Library code raises ordinary exceptions (``ValueError``, ``FileNotFoundError``, ``OSError`` …) whose
message says what went wrong and how to fix it; :class:`UsageError` / :class:`RuntimeFailure` are there for code
that wants to choose the exit code itself.

    >>> describe_error(FileNotFoundError("Reports file data.jsonl does not exist."))
    (2, 'Reports file data.jsonl does not exist.')
"""

from __future__ import annotations

import json

USAGE = 2
RUNTIME = 1

# Top-level packages whose exceptions are network failures (the hub client and the HTTP stacks under it).
_NETWORK_PACKAGES = ("httpx", "httpx2", "requests", "urllib3", "aiohttp", "huggingface_hub")
_NETWORK_FIX = (
    "Check the network connection, --endpoint / HF_ENDPOINT and the token, or write to a folder with --local-hub."
)


class ReportkdError(Exception):
    """Base of the errors that carry their own exit code."""

    exit_code = RUNTIME


class UsageError(ReportkdError, ValueError):
    """The command is wrong (bad flag, bad value, missing input): exit code 2."""

    exit_code = USAGE


class RuntimeFailure(ReportkdError, RuntimeError):
    """The command is right but running it failed (I/O, corrupt file, network): exit code 1."""

    exit_code = RUNTIME


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) quotes its message
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network(exc: BaseException) -> bool:
    for e in _chain(exc):
        from_network_package = type(e).__module__.split(".")[0] in _NETWORK_PACKAGES
        if isinstance(e, ConnectionError | TimeoutError) or (from_network_package and not isinstance(e, ValueError)):
            return True
    return False


def _is_safetensors(exc: BaseException) -> bool:
    return type(exc).__name__ == "SafetensorError" or type(exc).__module__.startswith("safetensors")


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``exc`` (without the ``reportkd <cmd>: error:`` prefix).

    Args:
        exc: the exception a command raised.

    Returns:
        ``(exit_code, message)``: 2 for usage errors (``UsageError``, ``ValueError``, ``KeyError``, a missing input
        file or folder), 1 for runtime failures (``OSError``, ``RuntimeError``, a corrupt safetensors or JSON file,
        the network) and for anything unexpected, whose message says to rerun with ``-v``.
    """
    msg = _one_line(_message(exc))
    if isinstance(exc, ReportkdError):
        return exc.exit_code, msg
    if _is_network(exc):
        return RUNTIME, f"network error ({type(exc).__name__}: {msg}). {_NETWORK_FIX}"
    if _is_safetensors(exc):
        return RUNTIME, f"cannot read a safetensors file ({msg}): it is truncated or not safetensors; re-create it."
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return RUNTIME, f"corrupt file ({type(exc).__name__}: {msg}); fix or re-create it."
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError | FileExistsError):
        return USAGE, msg if isinstance(exc, FileNotFoundError) else f"{msg}. Choose another path."
    if isinstance(exc, ValueError | KeyError):
        return USAGE, msg
    if isinstance(exc, PermissionError):
        return RUNTIME, f"{msg}. Check the permissions or choose another path."
    if isinstance(exc, OSError | RuntimeError | ImportError):
        return RUNTIME, f"{msg} (run with -v for the traceback)"
    return RUNTIME, f"unexpected {type(exc).__name__}: {msg} (run with -v for the traceback)"
