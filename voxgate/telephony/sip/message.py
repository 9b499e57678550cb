"""SIP messages (RFC 3261 §7, §20, §25): parse from datagrams, serialise back, nothing else.

Parsing is strict about what the user agent relies on (a start line, the headers a transaction needs)
and tolerant of everything else (folded lines, compact header names, odd spacing, unknown headers): a
message that cannot be understood raises :class:`SipParseError`, never anything else, so a malformed
datagram from the network is dropped or answered with 400, and nothing crashes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from voxgate.errors import VoxgateError

MAX_MESSAGE_BYTES = 65535  # one UDP datagram
SIP_VERSION = "SIP/2.0"

# compact forms (RFC 3261 §7.3.3, RFC 3515, RFC 3841) and the spelling the rest of the code uses
_CANONICAL = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "max-forwards": "Max-Forwards",
}
# headers whose values may be comma-joined lists (RFC 3261 §7.3.1); others keep commas as text
LIST_HEADERS = frozenset({"Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require"})
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


class SipParseError(VoxgateError):
    """A SIP message (or a header in it) that cannot be understood."""


def canonical_name(name: str) -> str:
    """``via``, ``v`` and ``VIA`` are the same header; this is the one spelling used here."""
    lower = name.strip().lower()
    if lower in _CANONICAL:
        return _CANONICAL[lower]
    return "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))


def split_list(value: str) -> list[str]:
    """Split a comma-joined header value at commas outside quotes and ``<...>``."""
    parts: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and char == ",":
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


@dataclass
class Headers:
    """Ordered headers; names canonical, list headers one value per entry."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        name = canonical_name(name)
        if name in LIST_HEADERS:
            self.items.extend((name, v) for v in split_list(value))
        else:
            self.items.append((name, value.strip()))

    def get(self, name: str, default: str | None = None) -> str | None:
        name = canonical_name(name)
        return next((v for n, v in self.items if n == name), default)

    def get_all(self, name: str) -> list[str]:
        name = canonical_name(name)
        return [v for n, v in self.items if n == name]

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header by one, where the first was (or at the end)."""
        name = canonical_name(name)
        for i, (n, _) in enumerate(self.items):
            if n == name:
                self.items[i] = (name, value)
                self.items[i + 1 :] = [item for item in self.items[i + 1 :] if item[0] != name]
                return
        self.items.append((name, value))

    def remove(self, name: str) -> None:
        name = canonical_name(name)
        self.items = [item for item in self.items if item[0] != name]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


@dataclass
class SipMessage:
    """A request (``method`` and ``uri`` set) or a response (``status`` set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; SipParseError when it is missing or malformed."""
        value = self.headers.get("CSeq")
        parts = (value or "").split()
        if len(parts) != 2 or not parts[0].isdecimal() or len(parts[0]) > 10:
            raise SipParseError(f"bad CSeq {value!r}")
        return int(parts[0]), parts[1].upper()

    def encode(self) -> bytes:
        if self.method is not None:
            start = f"{self.method} {self.uri} {SIP_VERSION}"
        else:
            start = f"{SIP_VERSION} {self.status} {self.reason}"
        lines = [start]
        lines += [f"{name}: {value}" for name, value in self.headers if name != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __str__(self) -> str:
        if self.method is not None:
            return f"{self.method} {self.uri}"
        return f"{self.status} {self.reason}"


def parse_message(data: bytes) -> SipMessage:
    """One SIP message from a datagram. Raises SipParseError (only) for anything malformed."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message larger than a datagram")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not UTF-8") from exc
    lines = text.replace("\r\n", "\n").lstrip("\n").split("\n")
    start, raw_headers = lines[0], lines[1:]
    message = _start_line(start)
    unfolded: list[str] = []
    for line in raw_headers:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        elif line.strip():
            unfolded.append(line)
    for line in unfolded:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError(f"bad header line {line[:80]!r}")
        message.headers.add(name, value)
    for required in ("Via", "Call-ID", "CSeq", "From", "To"):
        if required not in message.headers:
            raise SipParseError(f"no {required} header")
    _, method = message.cseq()
    if message.is_request and method != message.method:
        raise SipParseError(f"CSeq method {method} does not match {message.method}")
    length = message.headers.get("Content-Length")
    if length is not None:
        if not length.isdecimal() or len(length) > 6:
            raise SipParseError(f"bad Content-Length {length!r}")
        if int(length) > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[: int(length)]
    message.body = body
    return message


def _start_line(line: str) -> SipMessage:
    if line.startswith(SIP_VERSION + " "):
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdecimal() or not 100 <= int(parts[1]) <= 699:
            raise SipParseError(f"bad status line {line[:80]!r}")
        return SipMessage(status=int(parts[1]), reason=parts[2].strip() if len(parts) > 2 else "")
    parts = line.split()
    if len(parts) != 3 or parts[2] != SIP_VERSION or not _TOKEN.match(parts[0]):
        raise SipParseError(f"bad request line {line[:80]!r}")
    return SipMessage(method=parts[0].upper(), uri=parts[1])


# -- header values -----------------------------------------------------------------------------------------


def parse_params(text: str) -> dict[str, str]:
    """``;a=1;b;c="x"`` -> ``{"a": "1", "b": "", "c": "x"}`` (names lower-cased)."""
    params: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            params[name.strip().lower()] = value.strip().strip('"')
    return params


def format_params(params: dict[str, str]) -> str:
    return "".join(f";{k}={v}" if v != "" else f";{k}" for k, v in params.items())


@dataclass
class SipUri:
    """``sip:user@host:port;params`` (``sips:`` and ``tel:`` parse too; only sip is routed)."""

    scheme: str
    user: str
    host: str
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: str = ""

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{host}{port}{format_params(self.params)}{headers}"


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips", "tel"):
        raise SipParseError(f"not a SIP URI: {text[:80]!r}")
    rest, _, headers = rest.partition("?")
    user = ""
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        user = user.partition(":")[0]  # never keep a password from a URI
    hostport, _, params = rest.partition(";")
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise SipParseError(f"bad IPv6 host in {text[:80]!r}")
        port_text = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    if not host and scheme.lower() != "tel":
        raise SipParseError(f"no host in {text[:80]!r}")
    if port_text and (not port_text.isdecimal() or not 0 < int(port_text) < 65536):
        raise SipParseError(f"bad port in {text[:80]!r}")
    return SipUri(
        scheme.lower(), user, host, int(port_text) if port_text else None, parse_params(params), headers
    )


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: optional display name, a URI, header parameters (tag, expires)."""

    uri: str
    display: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(text: str) -> NameAddr:
    text = text.strip()
    if "<" in text:
        display, _, rest = text.partition("<")
        uri, closing, params = rest.partition(">")
        if not closing:
            raise SipParseError(f"unclosed <...> in {text[:80]!r}")
        return NameAddr(uri.strip(), display.strip(), parse_params(params))
    # addr-spec without brackets: parameters after the URI belong to the header (RFC 3261 §20.10)
    uri, _, params = text.partition(";")
    if not uri:
        raise SipParseError("empty address")
    return NameAddr(uri.strip(), "", parse_params(params))


@dataclass
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;rport``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    protocol, _, rest = text.strip().partition(" ")
    pieces = protocol.split("/")
    if len(pieces) != 3 or pieces[0].upper() != "SIP":
        raise SipParseError(f"bad Via {text[:80]!r}")
    sent_by, _, params = rest.strip().partition(";")
    sent_by = sent_by.strip()
    if sent_by.startswith("["):
        host, _, after = sent_by[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_text = sent_by.partition(":")
    if not host or (port_text and (not port_text.isdecimal() or not 0 < int(port_text) < 65536)):
        raise SipParseError(f"bad Via sent-by {text[:80]!r}")
    return Via(pieces[2].upper(), host, int(port_text) if port_text else None, parse_params(params))


def response_to(
    request: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> SipMessage:
    """A response that copies what RFC 3261 §8.2.6.2 says it must: Via (all, in order), From, To (with our
    tag added unless one is there), Call-ID, CSeq; and Record-Route for responses that make a dialog."""
    response = SipMessage(status=status, reason=reason)
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq") or (
            name == "Record-Route" and request.method in ("INVITE", "SUBSCRIBE") and 100 < status < 300
        ):
            response.headers.items.append((name, value))
        elif name == "To":
            to = value
            if to_tag and status > 100 and _without_tag(to):
                to = f"{to};tag={to_tag}"
            response.headers.items.append((name, to))
    for name, value in extra:
        response.headers.add(name, value)
    return response


def _without_tag(value: str) -> bool:
    try:
        return parse_name_addr(value).tag is None
    except SipParseError:
        return False
