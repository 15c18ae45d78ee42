"""Label values from free text: a label must come from a small, fixed set.

A rejection reason or an error message is a sentence, different for every file; as a
label it would make one time series per file. These functions map it to a class an
alert rule can name, and "other" for what they do not know.
"""

from __future__ import annotations

from flad.remote import errors

#: (class, words of the reason), the first that matches wins; reasons are flad's own.
_REASON_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("duplicate", ("already sent as",)),
    ("not_regular", ("not a regular file", "is a link", "symbolic link")),
    ("unreadable", ("permission denied", "may not read")),
    ("size", ("larger than the limit",)),
    ("application", ("no application",)),
    ("signature", ("signing certificate",)),
    ("production", ("may not send production",)),
    ("encoding", ("utf-8", "utf-16", "encoded in")),
    ("schema", ("xsd", "schema", "element", "attribute", "not expected",
                "not a valid value")),
    ("identity", ("enterprise", "company", "noss", "mandate", "quality", "employer",
                  "sender")),
    ("xml", ("xml", "well-formed", "parse", "empty", "entity", "doctype")),
)

REASON_CLASSES: tuple[str, ...] = (*(c for c, _ in _REASON_CLASSES), "other")


def reason_class(reason: str | None) -> str:
    """The class of a rejection reason, one of `REASON_CLASSES`."""
    text = (reason or "").lower()
    for name, words in _REASON_CLASSES:
        if any(w in text for w in words):
            return name
    return "other"


FAILURE_KINDS = ("host_key", "auth", "key", "permission", "not_found", "incompatible",
                 "permanent", "proxy", "timeout", "refused", "dns", "closed", "transient")


def failure_kind(exc: BaseException) -> str:
    """The kind of a connection failure, one of `FAILURE_KINDS`."""
    if isinstance(exc, errors.HostKeyUnknown | errors.HostKeyMismatch):
        return "host_key"
    if isinstance(exc, errors.AuthenticationFailed):
        return "auth"
    if isinstance(exc, errors.PrivateKeyError):
        return "key"
    if isinstance(exc, errors.RemotePermissionDenied):
        return "permission"
    if isinstance(exc, errors.RemoteNotFound):
        return "not_found"
    if isinstance(exc, errors.RemoteIncompatible):
        return "incompatible"
    if isinstance(exc, errors.PermanentTransportError):
        return "permanent"
    text = str(exc).lower()
    for kind, words in (("proxy", ("proxy",)), ("timeout", ("timed out", "no answer")),
                        ("refused", ("refused",)), ("dns", ("resolve",)),
                        ("closed", ("closed", "eof", "reset", "dropped"))):
        if any(w in text for w in words):
            return kind
    return "transient"
