"""CallGuard: the wrapper around every unary handler that turns whatever ends a call into its status.

Applied to every unary method at registration (wrappers.py)::

    undecodable request bytes (e.g. invalid UTF-8 in a string field) -> INVALID_ARGUMENT instead
        of grpc's INTERNAL
    deadline already passed when a worker picks the call up -> DEADLINE_EXCEEDED without doing the work
    any exception the handler raises -> its status, through the one map (errors.grpc_status)
    a response over the message limit -> INVALID_ARGUMENT (not an opaque transport error that the
        client would retry); measured with :func:`size_bound` first, which costs no encoding, and
        with protobuf's ``ByteSize()`` (an encoding of the whole message) only when the bound is over

Every refusal is a domain exception (``ValueError``, ``LimitExceededError``, ``DeadlinePassedError``)
given its code and message by :func:`embserve_server.errors.grpc_status`, like the handlers' own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from embserve_server.errors import DeadlinePassedError, LimitExceededError, grpc_status
from embserve_server.wrappers import UnaryWrapper


class _Undecodable:
    """Stands in for a request whose bytes do not parse; the guard answers INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, error: ValueError) -> None:
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    message_type = getattr(getattr(deserialize, "__self__", None), "__name__", f"{method} request")

    def safe(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and anything a parser raises
            return _Undecodable(ValueError(f"request: {len(raw)} bytes are not a valid {message_type} ({exc})"))

    return safe


# Upper bounds of the wire framing, in bytes: a tag is a varint of (field number << 3 | type) with
# field numbers below 2**29 (<= 5 bytes), a length prefix a varint below 2**32 (<= 5 bytes), any
# scalar value a varint of <= 10 bytes or a fixed 4/8 bytes. UTF-8 holds a code point in <= 4 bytes.
_TAG_AND_LENGTH = 10
_SCALAR = 15  # tag + the longest scalar value
_UTF8_PER_CHAR = 4
_REPEATED_ITEM = 10  # an item of a repeated string/bytes field: its own tag and length


class _Plan:
    """What :func:`size_bound` reads of one message type: a constant for its scalars, getters for the rest."""

    __slots__ = ("fixed", "raw", "text", "repeated")

    def __init__(self, fields: Sequence[FieldDescriptor]) -> None:
        singular = [f for f in fields if not f.is_repeated]
        raw = [f.name for f in singular if f.type == FieldDescriptor.TYPE_BYTES]
        text = [f.name for f in singular if f.type == FieldDescriptor.TYPE_STRING]
        self.fixed = _SCALAR * (len(singular) - len(raw) - len(text)) + _TAG_AND_LENGTH * (len(fields) - len(singular) + len(raw) + len(text))
        self.raw = _getter(raw)  # each bytes field: its length
        self.text = _getter(text)  # each string field: <= 4 bytes a character
        self.repeated = tuple((f.name, f.type) for f in fields if f.is_repeated)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The named fields of a message as one tuple (one C call for the lot)."""
    if not names:
        return lambda message: ()
    if len(names) == 1:
        name = names[0]
        return lambda message: (getattr(message, name),)
    return attrgetter(*names)


_plans: dict[Descriptor, _Plan | None] = {}


def _plan(descriptor: Descriptor) -> _Plan | None:
    """The plan of a message type holding no message field; None for one that does."""
    if descriptor not in _plans:
        fields = descriptor.fields
        flat = all(f.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP) for f in fields)
        _plans[descriptor] = _Plan(fields) if flat else None
    return _plans[descriptor]


def size_bound(message: Any) -> int | None:
    """An upper bound of ``message``'s encoded size, without encoding it; None when none is cheap.

    Bounded for messages of scalar, ``bytes`` and ``string`` fields (every response that carries
    arrays): each field's content length plus the most its framing can take, set or not.
    Reading a bytes field copies it once, which is cheaper than ``ByteSize()`` for a large
    message (upb encodes the whole message to count it). A message holding message fields gets
    None: the caller uses ``ByteSize()``.
    """
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        return None
    bound = plan.fixed + sum(map(len, plan.raw(message))) + _UTF8_PER_CHAR * sum(map(len, plan.text(message)))
    for name, kind in plan.repeated:
        items = getattr(message, name)
        if kind == FieldDescriptor.TYPE_BYTES:
            bound += sum(map(len, items)) + _REPEATED_ITEM * len(items)
        elif kind == FieldDescriptor.TYPE_STRING:
            bound += _UTF8_PER_CHAR * sum(map(len, items)) + _REPEATED_ITEM * len(items)
        else:
            bound += _SCALAR * len(items)  # packed or not: <= a tag and a 10-byte varint an item
    return bound


def response_size(message: Any, limit: int) -> int:
    """``message``'s encoded size when it may be over ``limit``; else a bound of it (<= limit).

    A response already encoded (pack.Encoded: no descriptor) is its ``ByteSize()``, its bytes' length.
    """
    if not hasattr(message, "DESCRIPTOR"):
        return int(message.ByteSize())
    bound = size_bound(message)
    if bound is not None and bound <= limit:
        return bound
    return int(message.ByteSize())


class CallGuard(UnaryWrapper):
    """Statuses for exceptions, undecodable requests and over-limit responses; skip expired calls."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def applies(self, handler: Any) -> bool:
        return handler.unary_unary is not None and handler.request_deserializer is not None

    def wrap(self, name: str, handler: Any) -> Any:
        behavior = handler.unary_unary
        limit = self.max_message_bytes

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if isinstance(request, _Undecodable):
                    raise request.error
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    # The caller has given up while the call waited in the queue: do not do the work.
                    raise DeadlinePassedError("deadline passed before the call was handled")
                response = behavior(request, context)
                size = response_size(response, limit) if hasattr(response, "ByteSize") else 0
                if size > limit:
                    raise LimitExceededError(
                        f"response: {size} bytes is over the limit of {limit} (--max-message-bytes); ask for fewer rows per call"
                    )
                return response
            except Exception as exc:  # noqa: BLE001 - the one exception -> status boundary of the gRPC port
                if context.code() is not None:
                    raise  # the handler set its own status (context.abort): keep it
                context.abort(*grpc_status(exc))

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_safe_deserializer(handler.request_deserializer, name.rsplit("/", 1)[-1]),
            response_serializer=handler.response_serializer,
        )
