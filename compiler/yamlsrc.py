"""A strict YAML 1.2 front end that keeps a position for every node.

Why not PyYAML: it reads YAML 1.1, where an unquoted port range `10:20` is
the base-60 integer 620, `0777` is 511 and `on` is True, and it keeps the
last of two duplicate keys without a word. A firewall must not coerce
anything silently. So: ruamel.yaml composes the node graph (with line and
column marks), and scalars are resolved here by the YAML 1.2 core schema:

    null   ~ | null | Null | NULL | (empty)
    bool   true | True | TRUE | false | False | FALSE
    int    [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+     (0777 is refused: 1.1 says 511)
    float  [-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)? | [-+]?.inf | .nan
    str    everything else (10:20, on, yes, 1_000, 0b11 ...)

Quoted and block scalars are always strings; explicit standard tags
(!!str, !!int, ...) are honoured; duplicate keys, non-string keys and a
`%YAML 1.1` directive are errors.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, PolicyError, Span

MAX_NODES = 1_000_000  # expanded nodes per stream: aliases cannot blow up
_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
# Plain words YAML 1.1 (and so Kubernetes' and calicoctl's YAML) reads as
# booleans; YAML 1.2 reads them as strings. A value written so is refused.
_YAML11_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")


@dataclass(frozen=True, slots=True)
class Scalar:
    value: str | int | float | bool | None
    span: Span
    tag: str  # "str", "int", "float", "bool" or "null"
    quoted: bool = False  # quoted or block scalar: always a string


@dataclass(frozen=True, slots=True)
class Mapping:
    items: tuple[tuple[Scalar, "Node"], ...]
    span: Span

    def get(self, key: str) -> "Node | None":
        for k, v in self.items:
            if k.value == key:
                return v
        return None

    def keys(self) -> list[str]:
        return [k.value for k, _ in self.items]

    def key_span(self, key: str) -> Span:
        for k, _ in self.items:
            if k.value == key:
                return k.span
        return self.span


@dataclass(frozen=True, slots=True)
class Sequence:
    items: tuple["Node", ...]
    span: Span


Node = Scalar | Mapping | Sequence


def load_documents(text: str, *, source: str) -> tuple[Node, ...]:
    """Every non-empty document of a stream, as position-carrying nodes."""
    if re.search(r"^%YAML\s+1\.1\b", text, re.M):
        line = text[: re.search(r"^%YAML", text, re.M).start()].count("\n") + 1
        raise PolicyError(Diagnostic(Span(source, line, 1), "", None,
                                     "YAML 1.1 is not accepted (its implicit types coerce values); "
                                     "remove the %YAML 1.1 directive"))
    yaml = YAML(typ="safe", pure=True)
    try:
        roots = list(yaml.compose_all(io.StringIO(text)))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        span = Span(source, mark.line + 1, mark.column + 1) if mark else Span(source, 1, 1)
        reason = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise PolicyError(Diagnostic(span, "", None, f"YAML: {reason}")) from None
    except YAMLError as e:
        raise PolicyError(Diagnostic(Span(source, 1, 1), "", None, f"YAML: {e}")) from None
    budget = [MAX_NODES]
    return tuple(_convert(r, source, budget, text) for r in roots if r is not None and not _empty(r))


def _empty(node) -> bool:
    return isinstance(node, ScalarNode) and node.value == "" and node.style is None and node.tag == _TAG + "null"


def _span(node, source: str) -> Span:
    return Span(source, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node, source: str, budget: list[int], text: str) -> Node:
    budget[0] -= 1
    if budget[0] < 0:
        raise PolicyError(Diagnostic(_span(node, source), "", None,
                                     f"document expands to more than {MAX_NODES} nodes (alias bomb?)"))
    if isinstance(node, ScalarNode):
        # A node written with a tag starts with '!'; ruamel's own implicit
        # tags follow YAML 1.1 rules and are ignored.
        explicit = text[node.start_mark.index:node.start_mark.index + 1] == "!"
        return _scalar(node, source, explicit)
    if isinstance(node, SequenceNode):
        return Sequence(tuple(_convert(n, source, budget, text) for n in node.value), _span(node, source))
    if isinstance(node, MappingNode):
        items = []
        seen: dict[str, Span] = {}
        for k, v in node.value:
            key = _convert(k, source, budget, text)
            if not isinstance(key, Scalar) or not isinstance(key.value, str):
                raise PolicyError(Diagnostic(_span(k, source), "", None, "mapping keys must be strings"))
            if key.value == "<<":
                raise PolicyError(Diagnostic(key.span, "", None, "merge keys (<<) are not part of YAML 1.2"))
            if key.value in seen:
                raise PolicyError(Diagnostic(key.span, key.value, None,
                                             f"duplicate key (first at line {seen[key.value].line})"))
            seen[key.value] = key.span
            value = _convert(v, source, budget, text)
            if (isinstance(value, Scalar) and not value.quoted and isinstance(value.value, str)
                    and _YAML11_BOOL.match(value.value)):
                raise PolicyError(Diagnostic(value.span, key.value, value.value,
                                             "ambiguous: YAML 1.1 reads this word as a boolean, YAML 1.2 as "
                                             "a string; quote it if you mean the string"))
            items.append((key, value))
        return Mapping(tuple(items), _span(node, source))
    raise PolicyError(Diagnostic(_span(node, source), "", None, "unsupported YAML node"))


def _scalar(node: ScalarNode, source: str, explicit: bool) -> Scalar:
    span = _span(node, source)
    text = node.value
    quoted = node.style is not None  # ', ", | or >
    tag = node.tag or ""
    if explicit and tag == "!":
        return Scalar(text, span, "str", True)
    if explicit and not tag.startswith(_TAG):
        raise PolicyError(Diagnostic(span, "", text, f"unknown tag {tag}"))
    if not explicit and quoted:
        return Scalar(text, span, "str", True)
    kind = tag[len(_TAG):] if explicit else _implicit(text)
    if kind not in ("str", "int", "float", "bool", "null"):
        raise PolicyError(Diagnostic(span, "", text, f"unsupported tag !!{kind}"))
    if kind == "int" and not explicit and re.match(r"^[-+]?0[0-9]", text):
        # YAML 1.1 reads 0777 as octal 511, YAML 1.2 as 777: refuse to guess.
        raise PolicyError(Diagnostic(span, "", text, "ambiguous number with a leading zero (YAML 1.1 reads "
                                     "it as octal, YAML 1.2 as decimal); write it without the zero"))
    try:
        value = _construct(kind, text)
    except ValueError:
        raise PolicyError(Diagnostic(span, "", text, f"not a valid !!{kind}")) from None
    return Scalar(value, span, kind, quoted or (kind == "str" and explicit))


def _implicit(text: str) -> str:
    if _NULL.match(text):
        return "null"
    if text in _BOOL:
        return "bool"
    if _INT10.match(text) or _INT8.match(text) or _INT16.match(text):
        return "int"
    if _FLOAT.match(text) or _INF.match(text) or _NAN.match(text):
        return "float"
    return "str"


def _construct(kind: str, text: str):
    if kind == "str":
        return text
    if kind == "null":
        if not _NULL.match(text):
            raise ValueError(text)
        return None
    if kind == "bool":
        return _BOOL[text] if text in _BOOL else _fail(text)
    if kind == "int":
        if _INT10.match(text):
            return int(text, 10)
        if _INT8.match(text):
            return int(text[2:], 8)
        if _INT16.match(text):
            return int(text[2:], 16)
        raise ValueError(text)
    if kind == "float":
        if _INF.match(text):
            return -math.inf if text.startswith("-") else math.inf
        if _NAN.match(text):
            return math.nan
        if _FLOAT.match(text) or _INT10.match(text):
            return float(text)
        raise ValueError(text)
    raise ValueError(text)


def _fail(text: str):
    raise ValueError(text)


def to_plain(node: Node):
    """Plain Python objects, for debugging and tests."""
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Sequence):
        return [to_plain(n) for n in node.items]
    return {k.value: to_plain(v) for k, v in node.items}
