"""A strict YAML 1.2 front end that keeps a source position for every node.

Why not ``yaml.safe_load``: PyYAML reads YAML 1.1, where an unquoted port
range ``10:20`` is the base-60 integer 620, ``0777`` is the octal 511 and
``on``/``yes`` are True, and where the second of two duplicate keys silently
wins. A firewall must never coerce silently, and every error must say where
it is (``policy.yaml:14:7: spec.ingress[0]...``). So ruamel.yaml's *parser*
turns the text into events (each with a line and column), this module
composes them into :class:`Scalar` / :class:`Mapping` / :class:`Sequence`
nodes, and plain scalars are resolved here by the YAML 1.2 **core schema**
(YAML 1.2.2, section 10.3.2) -- nothing else, no constructor runs:

    null   ~ | null | Null | NULL | (empty)
    bool   true | True | TRUE | false | False | FALSE
    int    [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+
    float  [-+]?(\\.[0-9]+ | [0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?
           | [-+]?(.inf | .Inf | .INF) | .nan | .NaN | .NAN
    str    everything else

Consequences worth knowing: ``10:20``, ``1_000``, ``0b11``, ``-0x1F`` and
``+0o7`` are strings; ``1e3`` is the float 1000.0, ``0x1F`` the int 31 and
``0o17`` the int 15. Quoted and block (``|``, ``>``) scalars are always
strings, and say so in ``Scalar.quoted``, so callers can tell ``"80"`` from
``80``.

Two things the 1.2 core schema would read one way and YAML 1.1 (PyYAML, and
the go-yaml behind kubectl and calicoctl) another are *refused*, not
guessed, because reading either way would silently disagree with the other
tools:

* a plain int with a leading zero (``0777``: 1.2 decimal 777, 1.1 octal
  511). ``0``, ``0o777``, ``777`` and ``!!int 0777`` (777) are fine;
* a plain, untagged mapping value that YAML 1.1 reads as a boolean
  (``y n yes no on off`` in their three casings). In 1.2 it is a string, so
  ``enabled: on`` would be the string "on". Sequence items and keys are
  read the 1.2 way (``[on, yes]`` are strings): there, no Calico field
  expects a boolean.

Explicit standard tags are honoured (``!!str 80`` is the string "80",
``!!int "80"`` the int 80, ``!!float 1`` the float 1.0, ``!`` forces a
string; ``quoted`` still only says how the scalar was written); a value
that does not fit its tag is an error. Any other tag (``!!binary``,
``!!timestamp``, ``!!set``, ``!foo``, a ``%TAG``-renamed ``!!``) is an error.

Also errors (``PolicyError``, each diagnostic with a Span): YAML syntax
errors where ruamel reports them (``YAML: ...``; a tab used for indentation
gets its own message), duplicate keys (at the second key, ``duplicate key
(first at line N)``, the path naming the key), keys that are not strings,
the YAML 1.1 merge key ``<<`` (plain), aliases to undefined anchors or to a
node that contains the alias, nesting deeper than ``MAX_DEPTH``, and any
``%YAML`` directive but ``%YAML 1.2``: ``%YAML 1.1`` is *rejected*, never
honoured, so it cannot switch the semantics back. Non-fatal problems
(ambiguities, duplicates, keys, tags, aliases) are collected so one run
reports all of them; syntax and size errors stop at once.

Speed: ruamel's parser is pure Python (6 s for a 3 MB policy). When PyYAML
is installed with libyaml, a stream that is plain data -- no directive,
anchor, alias, tag, tab, duplicate or non-string key, nothing YAML 1.1
would read otherwise -- is composed from libyaml's events instead (the same
events, tens of times faster), into the same nodes with the same spans;
at anything else, and at any error, the stream goes the ruamel way, so
every diagnostic above reads as it always did. A long run of one-line
plain items (a network set's 100,000 nets) is handed to libyaml as its
first item only, and its other items are built here (``_runs``).

Anchors and aliases work. An alias to a mapping or sequence *shares* the
anchored node (spans inside it point where it was written); an alias to a
scalar yields a copy of the scalar positioned at the ``*alias``. Sharing
makes an alias O(1), but callers walk the expanded tree, so every node of
it is counted -- written once or reached through an alias -- and a stream
that expands to more than ``MAX_NODES`` nodes ("billion laughs") is an
error.
"""

from __future__ import annotations

import math
import re
from collections import deque
from itertools import repeat
from dataclasses import dataclass, field, replace
from typing import Iterator

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import Scanner

from .alloc import builder
from .diagnostics import Diagnostic, PolicyError, Span

try:  # libyaml, through PyYAML (see "Speed" above)
    import yaml as _pyyaml
    from yaml import _yaml as _libyaml
    from yaml.events import (
        MappingEndEvent as _MappingEnd,
        MappingStartEvent as _MappingStart,
        ScalarEvent as _Scalar,
        SequenceEndEvent as _SequenceEnd,
        SequenceStartEvent as _SequenceStart,
        StreamEndEvent as _StreamEnd,
    )
except ImportError:  # PyYAML without libyaml, or none: ruamel alone
    _libyaml = None

__all__ = [
    "MAX_NODES", "MAX_DEPTH", "Mapping", "Node", "Scalar", "Sequence",
    "load_documents", "to_plain",
]

MAX_NODES = 1_000_000  # nodes in the alias-expanded trees of one stream
MAX_DEPTH = 100  # nested collections; Calico resources need fewer than 10

# --------------------------------------------------------------------------
# Nodes


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar, resolved by the YAML 1.2 core schema.

    ``tag`` is the resolved type: "str", "int", "float", "bool" or "null".
    ``quoted`` is True if the scalar was written quoted ('...', "...") or as
    a block scalar (|, >), so callers can tell ``"80"`` from ``80``."""

    value: str | int | float | bool | None
    span: Span
    tag: str
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Mapping:
    """A mapping with string keys, in source order, without duplicates."""

    items: tuple[tuple[Scalar, "Node"], ...]
    span: Span
    _index: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {k.value: (k, v) for k, v in self.items})

    def get(self, key: str) -> "Node | None":
        hit = self._index.get(key)
        return hit[1] if hit is not None else None

    def keys(self) -> list[str]:
        return [k.value for k, _ in self.items]

    def key_span(self, key: str) -> Span:
        """Where ``key`` is written (the mapping's span if it is absent)."""
        hit = self._index.get(key)
        return hit[0].span if hit is not None else self.span


@dataclass(frozen=True, slots=True)
class Sequence:
    items: tuple["Node", ...]
    span: Span


Node = Scalar | Mapping | Sequence


def to_plain(node: Node):
    """The node tree as plain dicts, lists and scalars (debugging, tests)."""
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Sequence):
        return [to_plain(n) for n in node.items]
    return {k.value: to_plain(v) for k, v in node.items}


# --------------------------------------------------------------------------
# Core-schema resolution

_TAG = "tag:yaml.org,2002:"
_SCALAR_KINDS = ("str", "int", "float", "bool", "null")
_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")


# Only these can start a plain scalar that is not a string ("" aside).
_NOT_STR_START = frozenset("~nNtTfF0123456789+-.")
_NUMBER = re.compile(
    r"(?P<int>[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)"
    r"|(?P<float>[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))")


def _implicit(text: str) -> str:
    """The core-schema type of a plain (unquoted, untagged) scalar."""
    if not text:
        return "null"
    if text[0] not in _NOT_STR_START or "/" in text or ":" in text:
        return "str"  # most scalars: keys, names, selectors, CIDRs, port ranges
    if text in _NULL:
        return "null"
    if text in _BOOL:
        return "bool"
    m = _NUMBER.fullmatch(text)
    return m.lastgroup if m else "str"


def _construct(kind: str, text: str) -> str | int | float | bool | None:
    """``text`` as a value of core-schema type ``kind``; ValueError if it is
    not one (only possible for an explicit tag, or a float out of range)."""
    if kind == "str":
        return text
    if kind == "null" and text in _NULL:
        return None
    if kind == "bool" and text in _BOOL:
        return _BOOL[text]
    if kind == "int":
        if _INT10.fullmatch(text):
            return int(text, 10)
        if _INT8.fullmatch(text):
            return int(text[2:], 8)
        if _INT16.fullmatch(text):
            return int(text[2:], 16)
    if kind == "float":
        if _INF.fullmatch(text):
            return -math.inf if text.startswith("-") else math.inf
        if _NAN.fullmatch(text):
            return math.nan
        if _FLOAT.fullmatch(text):
            value = float(text)
            if math.isinf(value):
                raise ValueError("float out of range")
            return value
    raise ValueError(f"not a valid !!{kind}")


# Ambiguous between YAML 1.1 (PyYAML, and the go-yaml behind kubectl and
# calicoctl) and 1.2: refused rather than read either way.
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]")  # 0777: 1.1 octal 511, 1.2 decimal 777
_YAML11_BOOL = frozenset("y Y yes Yes YES n N no No NO on On ON off Off OFF".split())

_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool"}


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


# --------------------------------------------------------------------------
# Loading


class _VersionError(YAMLError):
    def __init__(self, mark, version) -> None:
        super().__init__(f"%YAML {version}")
        self.mark = mark
        self.version = version


class _StrictScanner(Scanner):
    """Rejects any ``%YAML`` directive but 1.2 where it is written (ruamel
    would otherwise switch to 1.1 parsing, or fail an assert on 1.3)."""

    def scan_yaml_directive_value(self, start_mark):
        version = super().scan_yaml_directive_value(start_mark)
        if tuple(version) != (1, 2):
            raise _VersionError(start_mark, version)
        return version


class _Fatal(Exception):
    pass


_OPEN = object()  # anchor whose node is still being composed


def load_documents(text: str, *, source: str) -> tuple[Node, ...]:
    """One root node per non-empty document of the stream ``text``.

    Documents that are empty or only comments are skipped. ``source`` names
    the text in every Span. Raises ``PolicyError`` (one diagnostic per
    problem) for anything the module docstring lists as an error."""
    if _libyaml is not None and _plain_text(text):
        try:
            return _Fast(text, source).stream()
        except (_Fallback, _pyyaml.YAMLError, UnicodeError):
            pass
    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = _StrictScanner
    composer = _Composer(text, source)
    events = yaml.parse(text)
    try:
        docs = composer.stream(events)
    except _Fatal:
        raise PolicyError(composer.errors) from None
    except _VersionError as e:
        composer.errors.append(Diagnostic(
            composer.span(e.mark), "", None,
            f"YAML {e.version[0]}.{e.version[1]} is not accepted, only 1.2 (YAML 1.1 coerces "
            "values such as 10:20, 0777 and on); remove the %YAML directive"))
        raise PolicyError(composer.errors) from None
    except MarkedYAMLError as e:
        composer.errors.append(composer.syntax_error(e))
        raise PolicyError(composer.errors) from None
    except ReaderError as e:
        line, col = composer.position(e.position)
        char = e.character if isinstance(e.character, str) else chr(e.character)
        composer.errors.append(Diagnostic(
            Span(source, line, col), "", None,
            f"YAML: character {char!r} (U+{ord(char):04X}) is not allowed"))
        raise PolicyError(composer.errors) from None
    except YAMLError as e:  # pragma: no cover - ruamel errors without a mark
        composer.errors.append(Diagnostic(Span(source, 1, 1), "", None, f"YAML: {e}"))
        raise PolicyError(composer.errors) from None
    finally:
        events.close()
    if composer.errors:
        raise PolicyError(composer.errors)
    return docs


def _after_colon(text: str, source: str, key_end) -> Span | None:
    """The span just after the ``:`` that follows a key: where an empty
    value is. (ruamel marks it at the next token, often the next line.)"""
    index = getattr(key_end, "index", None)
    if index is None:
        return None
    colon = text.find(":", index)
    if colon < 0 or any(c in "\r\n" for c in text[index:colon]):
        return None
    return Span(source, key_end.line + 1, key_end.column + (colon - index) + 2)


def _path(path: tuple[str | int, ...]) -> str:
    """("spec", "ingress", 0, "action") -> "spec.ingress[0].action"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


class _Composer:
    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.errors: list[Diagnostic] = []
        self.anchors: dict[str, object] = {}
        self.expanded = 0
        self.events: Iterator = iter(())

    # ---- positions

    def span(self, mark) -> Span:
        return Span(self.source, mark.line + 1, mark.column + 1)

    def position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of a character index, counting lines as
        ruamel does (LF, CRLF or a lone CR)."""
        before = self.text[:index]
        line = before.count("\n") + len(re.findall(r"\r(?!\n)", before)) + 1
        start = max(before.rfind("\n"), before.rfind("\r")) + 1
        return line, index - start - before[start:].count("\ufeff") + 1

    def _after_colon(self, key_end) -> Span | None:
        return _after_colon(self.text, self.source, key_end)

    # ---- errors

    def error(self, span: Span, path: tuple[str | int, ...], value: object, reason: str) -> None:
        self.errors.append(Diagnostic(span, _path(path), value, reason))

    def fatal(self, span: Span, path: tuple[str | int, ...], reason: str) -> _Fatal:
        self.error(span, path, None, reason)
        return _Fatal()

    def syntax_error(self, e: MarkedYAMLError) -> Diagnostic:
        mark = e.problem_mark or e.context_mark
        span = self.span(mark) if mark is not None else Span(self.source, 1, 1)
        index = getattr(mark, "index", None)
        if index is not None and self.text[index:index + 1] == "\t":
            start = max(self.text.rfind("\n", 0, index), self.text.rfind("\r", 0, index)) + 1
            if self.text[start:index].strip(" \t") == "":
                return Diagnostic(span, "", None,
                                  "YAML: tab character used for indentation "
                                  "(YAML indents with spaces only)")
            return Diagnostic(span, "", None, "YAML: tab character not allowed here; use spaces")
        reason = e.problem or e.context or "invalid YAML"
        if e.problem and e.context:
            cm = e.context_mark
            where = (f" started at line {cm.line + 1}, column {cm.column + 1}"
                     if cm is not None and mark is not None and (cm.line, cm.column) != (mark.line, mark.column)
                     else "")
            reason = f"{e.problem} ({e.context}{where})"
        return Diagnostic(span, "", None, f"YAML: {reason}")

    # ---- composition

    def stream(self, events: Iterator) -> tuple[Node, ...]:
        self.events = events
        docs = []
        for event in events:
            if not isinstance(event, DocumentStartEvent):
                continue  # StreamStart/End, DocumentEnd
            self.anchors = {}  # anchors do not cross documents
            first = next(events)
            if (isinstance(first, ScalarEvent) and first.value == "" and first.style is None
                    and first.tag is None and first.anchor is None):
                continue  # empty document (nothing, or only comments)
            node, _ = self.node(first, (), 0)
            docs.append(node)
        return tuple(docs)

    def node(self, event, path: tuple[str | int, ...], depth: int, span: Span | None = None) -> tuple[Node, int]:
        """The node starting at ``event`` and its expanded size in nodes."""
        if isinstance(event, AliasEvent):
            return self.alias(event, path)
        self.count(1, event, path)
        anchor = event.anchor
        if anchor is not None:
            self.anchors[anchor] = _OPEN
        if isinstance(event, ScalarEvent):
            result: tuple[Node, int] = (self.scalar(event, path, span), 1)
        else:
            if depth >= MAX_DEPTH:
                raise self.fatal(self.span(event.start_mark), (),
                                 f"nesting deeper than {MAX_DEPTH} levels")
            if isinstance(event, SequenceStartEvent):
                result = self.sequence(event, path, depth)
            elif isinstance(event, MappingStartEvent):
                result = self.mapping(event, path, depth)
            else:  # pragma: no cover - the parser guarantees a node here
                raise self.fatal(self.span(event.start_mark), path, f"unexpected {type(event).__name__}")
        if anchor is not None:
            self.anchors[anchor] = result
        return result

    def alias(self, event: AliasEvent, path: tuple[str | int, ...]) -> tuple[Node, int]:
        span = self.span(event.start_mark)
        target = self.anchors.get(event.anchor)
        if target is None or target is _OPEN:
            why = "no such anchor in this document" if target is None else \
                "it refers to a node that contains it (a cycle)"
            self.error(span, path, None, f"alias *{event.anchor}: {why}")
            return Scalar(None, span, "null"), 1
        node, size = target
        self.count(size, event, path)
        if isinstance(node, Scalar):
            node = replace(node, span=span)
        return node, size

    def count(self, n: int, event, path: tuple[str | int, ...]) -> None:
        self.expanded += n
        if self.expanded > MAX_NODES:
            raise self.fatal(self.span(event.start_mark), path,
                             f"document expands to more than {MAX_NODES} nodes (an alias bomb?)")

    def collection_tag(self, event, path: tuple[str | int, ...], want: str) -> None:
        tag = event.tag
        if tag is not None and tag != "!" and tag != _TAG + want:
            what = "sequence" if want == "seq" else "mapping"
            self.error(self.span(event.start_mark), path, None,
                       f"tag {_show_tag(tag)} cannot apply to a {what} (only !!{want} can)")

    def sequence(self, event: SequenceStartEvent, path: tuple[str | int, ...], depth: int) -> tuple[Node, int]:
        self.collection_tag(event, path, "seq")
        items: list[Node] = []
        size = 1
        for event2 in self.events:
            if isinstance(event2, SequenceEndEvent):
                break
            child, n = self.node(event2, path + (len(items),), depth + 1)
            items.append(child)
            size += n
        return Sequence(tuple(items), self.span(event.start_mark)), size

    def mapping(self, event: MappingStartEvent, path: tuple[str | int, ...], depth: int) -> tuple[Node, int]:
        self.collection_tag(event, path, "map")
        items: list[tuple[Scalar, Node]] = []
        seen: dict[str, Span] = {}
        size = 1
        for kev in self.events:
            if isinstance(kev, MappingEndEvent):
                break
            key, n = self.node(kev, path, depth + 1)
            size += n
            vev = next(self.events)
            span = None
            if (isinstance(vev, ScalarEvent) and vev.value == "" and vev.style is None
                    and vev.tag is None and vev.start_mark.line != kev.end_mark.line):
                span = self._after_colon(kev.end_mark)
            ok = self.check_key(kev, key, path, seen)
            vpath = path + (key.value,) if isinstance(key, Scalar) and isinstance(key.value, str) else path
            if (isinstance(vev, ScalarEvent) and vev.style is None and vev.tag is None
                    and vev.value in _YAML11_BOOL):
                self.error(self.span(vev.start_mark), vpath, vev.value,
                           "ambiguous: YAML 1.1 reads this word as a boolean, YAML 1.2 as a string; "
                           "quote it if you mean the string, or write true/false")
            value, n = self.node(vev, vpath, depth + 1, span)
            size += n
            if ok:
                seen[key.value] = key.span
                items.append((key, value))
        return Mapping(tuple(items), self.span(event.start_mark)), size

    def check_key(self, event, key: Node, path: tuple[str | int, ...], seen: dict[str, Span]) -> bool:
        if not isinstance(key, Scalar):
            what = "mapping" if isinstance(key, Mapping) else "sequence"
            self.error(key.span, path, None, f"mapping key is a {what}; keys must be strings")
            return False
        if not isinstance(key.value, str):
            if key.value is None:
                self.error(key.span, path, None, "mapping key is null (empty or ~); keys must be strings")
            else:
                shown = event.value if isinstance(event, ScalarEvent) else key.value
                self.error(key.span, path, None,
                           f"mapping key {shown} is {_ARTICLE[key.tag]}, not a string (quote it: \"{shown}\")")
            return False
        if (isinstance(event, ScalarEvent) and event.value == "<<" and event.style is None
                and event.tag is None):
            self.error(key.span, path, None,
                       "merge keys (<<) are not part of YAML 1.2; write the fields out "
                       "(or quote '<<' if it is meant as a key)")
            return False
        if key.value in seen:
            self.error(key.span, path + (key.value,), None,
                       f"duplicate key (first at line {seen[key.value].line})")
            return False
        return True

    def scalar(self, event: ScalarEvent, path: tuple[str | int, ...], span: Span | None) -> Scalar:
        span = span or self.span(event.start_mark)
        text, tag = event.value, event.tag
        quoted = event.style is not None  # ', ", | or >
        if tag is None:
            kind = "str" if quoted else _implicit(text)
        elif tag == "!":
            kind = "str"  # the non-specific tag: a string, whatever it looks like
        elif tag.startswith(_TAG) and tag[len(_TAG):] in _SCALAR_KINDS:
            kind = tag[len(_TAG):]
        else:
            known = "unsupported" if tag.startswith(_TAG) else "unknown"
            self.error(span, path, text, f"{known} tag {_show_tag(tag)} (allowed: "
                       "!!str, !!int, !!float, !!bool, !!null, !!map, !!seq)")
            return Scalar(text, span, "str", quoted)
        if kind == "int" and tag is None and _LEADING_ZERO.match(text):
            self.error(span, path, text, "ambiguous number with a leading zero (YAML 1.1 reads it as "
                       "octal, YAML 1.2 as decimal); write it without the zero, or as 0o...")
            return Scalar(text, span, "str", quoted)
        try:
            value = _construct(kind, text)
        except ValueError as e:
            self.error(span, path, text, str(e))
            return Scalar(text, span, "str", quoted)
        return Scalar(value, span, kind, quoted)


# --------------------------------------------------------------------------
# The fast path: libyaml's events, composed for input that is plain data

class _Fallback(Exception):
    """Not plain data: compose with ruamel, which reports every problem."""


def _plain_text(text: str) -> bool:
    """Worth trying libyaml on: no directive (libyaml honours %YAML 1.1), no
    document end marker (libyaml takes two in a row), no tab (ruamel refuses
    more of them than libyaml) and none of the characters YAML 1.1 reads as
    line breaks, nor a BOM."""
    if "\t" in text or any(text.startswith(m) or "\n" + m in text or "\r" + m in text for m in ("%", "...")):
        return False
    return text.isascii() or not any(c in text for c in "\x85\u2028\u2029\ufeff")


_span = builder(Span)
_scalar = builder(Scalar)
_new = object.__new__
_set_file, _set_line, _set_col = (vars(Span)[f].__set__ for f in ("file", "line", "col"))
_set_value, _set_span, _set_tag, _set_quoted = (vars(Scalar)[f].__set__ for f in ("value", "span", "tag", "quoted"))


def _string(text: str, source: str, mark, quoted: bool) -> Scalar:
    """``_scalar(text, _span(source, line, column), "str", quoted)`` at
    ``mark``, in one call: the inline paths make 180,000 of them at scale."""
    span = _new(Span)
    _set_file(span, source)
    _set_line(span, mark.line + 1)
    _set_col(span, mark.column + 1)
    scalar = _new(Scalar)
    _set_value(scalar, text)
    _set_span(scalar, span)
    _set_tag(scalar, "str")
    _set_quoted(scalar, quoted)
    return scalar

def _strings(texts: list[str], source: str, line: int, col: int) -> list[Scalar]:
    """``_string`` of each text, one a line from ``line`` (1-based) at
    ``col``: a field at a time, each set by a map (C speed)."""
    n = len(texts)
    spans = list(map(_new, repeat(Span, n)))
    for setter, values in ((_set_file, repeat(source)), (_set_line, range(line, line + n)), (_set_col, repeat(col))):
        deque(map(setter, spans, values), 0)
    scalars = list(map(_new, repeat(Scalar, n)))
    for setter, values in ((_set_value, texts), (_set_span, spans), (_set_tag, repeat("str")),
                           (_set_quoted, repeat(False))):
        deque(map(setter, scalars, values), 0)
    return scalars


# A run of block sequence items, one a line at one indentation, each a plain
# scalar of letters, digits, '.', '/' and ':' (not first or last: "1::" ends
# in a mapping indicator): a network set's nets. The next line is not more
# indented (it would continue the last item).
_ITEM = r"[0-9A-Za-z./](?:[0-9A-Za-z./:]*[0-9A-Za-z./])?"
_RUN = re.compile(rf"^( *)- ({_ITEM})\n((?:\1- {_ITEM}\n)+)(?=(?!\1 ) *[^ \n]|\Z)", re.M)
_RUN_MIN = 64  # items; shorter runs are left to libyaml


def _runs(text: str) -> tuple[str, dict[int, tuple[int, str, list[str]]]]:
    """``text`` with every run's items after its first blanked (the lines
    stay, so every position outside the runs is unchanged), and the runs:
    the first item's line (0-based) -> (its column, its text, the texts of
    the items blanked). libyaml then makes one event per run, not one per
    item; _Fast puts the items back where the first one is."""
    runs: dict[int, tuple[int, str, list[str]]] = {}
    if "\r" in text:  # libyaml counts a lone CR as a line break too: no runs, no miscounted lines
        return text, runs
    pieces = []
    at = line = 0
    for m in _RUN.finditer(text):
        rest = m.group(3)
        n = rest.count("\n")
        if n < _RUN_MIN:
            continue
        indent = len(m.group(1))
        items = rest[indent + 2:-1].split("\n" + m.group(1) + "- ")
        if not all("/" in t or ":" in t or t[0] not in _NOT_STR_START for t in items):
            continue  # an item that may not be a string (a number, null, a bool): libyaml's
        line += text.count("\n", at, m.start())
        pieces += (text[at:m.start(3)], "\n" * n)
        runs[line] = (indent + 2, m.group(2), items)
        at = m.end()
        line += 1 + n
    if not runs:
        return text, runs
    pieces.append(text[at:])
    return "".join(pieces), runs


# A block scalar's header: indicator, chomping and indentation, then a blank.
_BLOCK_HEADER = re.compile(r"[|>](?:[-+][1-9]?|[1-9][-+]?)?(?:[ \r\n]|\Z)")
_SPACES_LINE = re.compile(r"[\r\n] +(?=[\r\n]|\Z)")


class _Fast:
    """The composer above, for the input most policy files are: no anchor,
    alias or tag, no duplicate or non-string key, no value YAML 1.1 would
    read otherwise. It builds the same nodes from libyaml's events, and
    gives up (``_Fallback``) at anything else, so every error is reported
    by the ruamel path, in its words; libyaml's own errors do the same.
    (Written for speed: a 100,000-entry network set is 100,000 events.)"""

    def __init__(self, text: str, source: str, runs: bool = True):
        self.original = text
        self.text, self.runs = _runs(text) if runs else (text, {})
        self.source = source
        self.next = _libyaml.CParser(self.text).get_event
        self.nodes = 0
        self.max_nodes = MAX_NODES

    def stream(self) -> tuple[Node, ...]:
        next_event = self.next
        docs = []
        next_event()  # StreamStartEvent
        while True:
            start = next_event()
            if type(start) is _StreamEnd:
                if self.nodes > self.max_nodes:
                    raise _Fallback
                if self.runs:  # a run not where a block sequence's item was (in a block scalar?)
                    return _Fast(self.original, self.source, runs=False).stream()
                return tuple(docs)
            if start.version is not None or start.tags is not None:
                raise _Fallback  # %YAML or %TAG
            first = next_event()
            if type(first) is _Scalar and first.style in ("|", ">"):
                raise _Fallback  # a document that is a block scalar: where it ends, the two differ
            if not (type(first) is _Scalar and first.value == "" and not first.style
                    and first.tag is None and first.anchor is None):
                docs.append(self.node(first, 0, None))
            next_event()  # DocumentEndEvent

    def node(self, event, depth: int, span: Span | None) -> Node:
        """A node; ``depth``: its collection's depth + 1 (the root's is 0)."""
        kind = type(event)
        if kind is _Scalar:
            self.nodes += 1
            return self.scalar(event, span)
        if event.anchor is not None or event.tag is not None or depth >= MAX_DEPTH:
            raise _Fallback  # an anchor, alias (its anchor is set), tag or too deep
        self.nodes += 1
        mark = event.start_mark
        span = _span(self.source, mark.line + 1, mark.column + 1)
        if kind is _SequenceStart:
            return Sequence(self.sequence(depth + 1, not event.flow_style), span)
        if kind is _MappingStart:
            if event.flow_style and self.text[mark.index] != "{":
                raise _Fallback  # a single-pair mapping in a flow sequence: [a: b], ['a':b]
            items = self.mapping(depth + 1)
            mapping = Mapping(items, span)
            if len(mapping._index) != len(items):
                raise _Fallback  # a duplicate key
            return mapping
        raise _Fallback

    def scalar(self, event, span: Span | None) -> Scalar:
        if event.anchor is not None or event.tag is not None:
            raise _Fallback
        text = event.value
        if span is None:
            mark = event.start_mark
            span = _span(self.source, mark.line + 1, mark.column + 1)
        style = event.style
        if style:  # ', ", | or >
            if style in "|>" and (not _BLOCK_HEADER.match(self.text, event.start_mark.index)
                                  or _SPACES_LINE.search(self.text, event.start_mark.index, event.end_mark.index)):
                raise _Fallback  # libyaml takes `>#`; ruamel refuses some lines of spaces that libyaml takes
            return _scalar(text, span, "str", True)
        kind = _implicit(text)
        if kind == "str":
            return _scalar(text, span, "str", False)
        if kind == "int" and _LEADING_ZERO.match(text):
            raise _Fallback
        try:
            return _scalar(_construct(kind, text), span, kind, False)
        except ValueError:
            raise _Fallback from None

    def sequence(self, depth: int, block: bool = False) -> tuple[Node, ...]:
        next_event, node, source = self.next, self.node, self.source
        items = []
        append = items.append
        inline = 0
        runs = self.runs if block else None
        while True:
            event = next_event()
            kind = type(event)
            if kind is _SequenceEnd:
                break
            text = event.value if kind is _Scalar else ""
            if (text and not event.style and event.anchor is None and event.tag is None
                    and (text[0] not in _NOT_STR_START or "/" in text or ":" in text)):
                # The common item, inline: a plain string (a name, an IPv6 CIDR, ...).
                mark = event.start_mark
                append(_string(text, source, mark, False))
                inline += 1
                if runs and mark.line in runs and runs[mark.line][:2] == (mark.column, text):
                    more = runs.pop(mark.line)[2]
                    items += _strings(more, source, mark.line + 2, mark.column + 1)
                    inline += len(more)
            else:
                append(node(event, depth, None))
        self.nodes += inline
        if self.nodes > self.max_nodes:
            raise _Fallback
        return tuple(items)

    def mapping(self, depth: int) -> tuple[tuple[Scalar, Node], ...]:
        next_event, node, source = self.next, self.node, self.source
        items = []
        inline = 0
        while True:
            kev = next_event()
            if type(kev) is _MappingEnd:
                break
            if type(kev) is not _Scalar:
                raise _Fallback  # a collection as a key
            text = kev.value
            if (text and not kev.style and kev.anchor is None and kev.tag is None and text != "<<"
                    and (text[0] not in _NOT_STR_START or "/" in text or ":" in text)):
                key = _string(text, source, kev.start_mark, False)  # the common key, inline: a plain string
                inline += 1
            else:
                key = node(kev, depth, None)
                if key.tag != "str" or (text == "<<" and not kev.style):
                    raise _Fallback
            vev = next_event()
            if type(vev) is not _Scalar or vev.anchor is not None or vev.tag is not None:
                items.append((key, node(vev, depth, None)))
                continue
            text, style = vev.value, vev.style
            if style in ("'", '"'):  # the common values, inline: quoted, or a plain string
                value = _string(text, source, vev.start_mark, True)
                inline += 1
            elif (not style and text and text not in _YAML11_BOOL
                  and (text[0] not in _NOT_STR_START or "/" in text or ":" in text)):
                value = _string(text, source, vev.start_mark, False)
                inline += 1
            elif not style and text in _YAML11_BOOL:
                raise _Fallback
            elif not style and text == "":
                value = node(vev, depth, self.empty_value(kev.end_mark))
            else:
                value = node(vev, depth, None)
            items.append((key, value))
        self.nodes += inline
        if self.nodes > self.max_nodes:
            raise _Fallback
        return tuple(items)

    def empty_value(self, key_end) -> Span:
        """Where the reference composer places an empty value: after the
        colon when the next token is on a later line (a comment or the end
        of the line follows), else at that token (given up on here)."""
        span = _after_colon(self.text, self.source, key_end)
        if span is None:
            raise _Fallback
        text = self.text
        at = text.find(":", key_end.index) + 1
        while at < len(text) and text[at] == " ":
            at += 1
        if at < len(text) and text[at] == "#":  # a comment runs to the end of the line
            at = min((i for i in (text.find("\n", at), text.find("\r", at)) if i >= 0), default=len(text))
        if at == len(text) or text[at] not in "\r\n":
            raise _Fallback
        return span
