"""Calico's label selector language, as libcalico-go tokenizes, parses,
evaluates and prints it (shared/reference/calico-semantics.md, section 1).

    selector  := <only spaces/tabs> -> all() | or EOF
    or        := and ( "||" and )*
    and       := operation ( "&&" operation )*
    operation := "!"* ( has(L) | all() | global() | "(" or ")"
                      | L ("==" | "!=" | contains | starts with | ends with) STR
                      | L ("in" | "not in") "{" [STR ("," STR)* [","]] "}" )

Quirks kept on purpose, because Calico has them: whitespace is only space
and tab (a newline makes a selector invalid); strings have no escapes;
`!a == "x"` means `!(a == "x")`; `has(` takes no space before `(`;
operator words are only operators right after a label (`in == "x"` is a
comparison on the label `in`), may be written without inner space
(`startswith`) and need a word boundary after them; `k != "v"` and
`k not in {...}` are true when k is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_LABEL = 512
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


class SelectorError(ValueError):
    def __init__(self, reason: str, offset: int):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


# --- AST ------------------------------------------------------------------

def _quote(v: str) -> str:
    return f"'{v}'" if '"' in v else f'"{v}"'


@dataclass(frozen=True, slots=True)
class All:
    def eval(self, labels, all_value, global_value) -> bool:
        return all_value

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True, slots=True)
class Global:
    def eval(self, labels, all_value, global_value) -> bool:
        return global_value

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True, slots=True)
class Has:
    key: str

    def eval(self, labels, all_value, global_value) -> bool:
        return self.key in labels

    def __str__(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True, slots=True)
class Compare:
    """key <op> value for ==, !=, contains, starts with, ends with."""

    key: str
    op: str
    value: str

    def eval(self, labels, all_value, global_value) -> bool:
        v = labels.get(self.key)
        if self.op == "!=":
            return v is None or v != self.value
        if v is None:
            return False
        if self.op == "==":
            return v == self.value
        if self.op == "contains":
            return self.value in v
        if self.op == "starts with":
            return v.startswith(self.value)
        return v.endswith(self.value)

    def __str__(self) -> str:
        return f"{self.key} {self.op} {_quote(self.value)}"


@dataclass(frozen=True, slots=True)
class In:
    key: str
    values: tuple[str, ...]  # sorted, de-duplicated
    negated: bool = False

    def eval(self, labels, all_value, global_value) -> bool:
        v = labels.get(self.key)
        inside = v is not None and v in self.values
        return not inside if self.negated else inside

    def __str__(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.key} {op} {{{', '.join(_quote(v) for v in self.values)}}}"


@dataclass(frozen=True, slots=True)
class Not:
    expr: object

    def eval(self, labels, all_value, global_value) -> bool:
        return not self.expr.eval(labels, all_value, global_value)

    def __str__(self) -> str:
        return f"!{self.expr}"


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple

    def eval(self, labels, all_value, global_value) -> bool:
        return all(t.eval(labels, all_value, global_value) for t in self.terms)

    def __str__(self) -> str:
        return "(" + " && ".join(str(t) for t in self.terms) + ")"


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple

    def eval(self, labels, all_value, global_value) -> bool:
        return any(t.eval(labels, all_value, global_value) for t in self.terms)

    def __str__(self) -> str:
        return "(" + " || ".join(str(t) for t in self.terms) + ")"


Expr = All | Global | Has | Compare | In | Not | And | Or


@dataclass(frozen=True, slots=True)
class Selector:
    root: Expr
    text: str = ""  # as written

    def evaluate(self, labels: Mapping[str, str], *, all_value: bool = True, global_value: bool = True) -> bool:
        """True if the labels match. ``all_value``/``global_value`` are what
        all() and global() mean: both true for a plain selector; Calico's
        namespace-selector rewrite makes all() false for resources that are
        not namespaced (see resolve.scope_selector_matches_global)."""
        return self.root.eval(labels, all_value, global_value)

    def __str__(self) -> str:
        return str(self.root)

    def __eq__(self, other) -> bool:
        return isinstance(other, Selector) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def labels_used(self) -> frozenset[str]:
        out: set[str] = set()

        def walk(e):
            if isinstance(e, (Has, Compare, In)):
                out.add(e.key)
            elif isinstance(e, Not):
                walk(e.expr)
            elif isinstance(e, (And, Or)):
                for t in e.terms:
                    walk(t)

        walk(self.root)
        return frozenset(out)


# --- tokenizer ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # ( ) { } , == != ! && || str label has all global op eof
    value: str
    pos: int


_OPERATORS = (("not", "in"), ("starts", "with"), ("ends", "with"), ("contains",), ("in",))
_SIMPLE = {"(": "(", ")": ")", "{": "{", "}": "}", ",": ","}


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _label_end(s: str, i: int) -> int:
    while i < len(s) and s[i] in _LABEL_CHARS:
        i += 1
    return i


def _word_op(s: str, i: int) -> tuple[str, int] | None:
    """An operator word sequence at i (words separated by any run of
    spaces/tabs, or none), followed by a word boundary."""
    for words in _OPERATORS:
        j = i
        ok = True
        for n, w in enumerate(words):
            if n:
                j = _skip_ws(s, j)
            if not s.startswith(w, j):
                ok = False
                break
            j += len(w)
        if ok and (j == len(s) or s[j] not in _LABEL_CHARS):
            return " ".join(words), j
    return None


def _paren_word(s: str, i: int, word: str) -> tuple[str, int] | None:
    """`word(` ... `)`: has(label), all(), global()."""
    start = word + "("
    if not s.startswith(start, i):
        return None
    j = _skip_ws(s, i + len(start))
    if word == "has":
        k = _label_end(s, j)
        if k == j:
            raise SelectorError("expected identifier", j)
        if k - j > MAX_LABEL:
            raise SelectorError(f"label too long (max {MAX_LABEL})", j)
        label = s[j:k]
        j = _skip_ws(s, k)
    else:
        label = ""
    if j >= len(s) or s[j] != ")":
        raise SelectorError(f"expected ) after {word}(", j)
    return label, j + 1


def tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while True:
        i = _skip_ws(s, i)
        if i >= len(s):
            toks.append(_Tok("eof", "", i))
            return toks
        c = s[i]
        if c in _SIMPLE:
            toks.append(_Tok(c, c, i))
            i += 1
        elif c in "\"'":
            end = s.find(c, i + 1)
            if end < 0:
                raise SelectorError("unterminated string", i)
            toks.append(_Tok("str", s[i + 1:end], i))
            i = end + 1
        elif c == "=":
            if not s.startswith("==", i):
                raise SelectorError("expected == (a single = is not an operator)", i)
            toks.append(_Tok("==", "==", i))
            i += 2
        elif c == "!":
            if s.startswith("!=", i):
                toks.append(_Tok("!=", "!=", i))
                i += 2
            else:
                toks.append(_Tok("!", "!", i))
                i += 1
        elif c == "&":
            if not s.startswith("&&", i):
                raise SelectorError("expected &&", i)
            toks.append(_Tok("&&", "&&", i))
            i += 2
        elif c == "|":
            if not s.startswith("||", i):
                raise SelectorError("expected ||", i)
            toks.append(_Tok("||", "||", i))
            i += 2
        elif c in _LABEL_CHARS:
            for word in ("has", "all", "global"):
                hit = _paren_word(s, i, word)
                if hit is not None:
                    toks.append(_Tok(word, hit[0], i))
                    i = hit[1]
                    break
            else:
                i = _label(s, i, toks)
        else:
            raise SelectorError(f"unexpected character {c!r}", i)


def _label(s: str, i: int, toks: list[_Tok]) -> int:
    """A label, which must be followed by an operator."""
    end = _label_end(s, i)
    if end - i > MAX_LABEL:
        raise SelectorError(f"label too long (max {MAX_LABEL})", i)
    toks.append(_Tok("label", s[i:end], i))
    j = _skip_ws(s, end)
    if s.startswith("==", j) or s.startswith("!=", j):
        return j  # the main loop emits it
    op = _word_op(s, j)
    if op is None:
        raise SelectorError("expected an operator after a label (==, !=, in, not in, contains, "
                            "starts with, ends with)", j)
    toks.append(_Tok("op", op[0], j))
    return op[1]


# --- parser -------------------------------------------------------------------

class _Parser:
    def __init__(self, toks: list[_Tok]):
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str) -> _Tok:
        t = self.toks[self.i]
        if t.kind != kind:
            want = {"str": "a string literal", "label": "an identifier", "eof": "end of selector"}.get(kind, kind)
            raise SelectorError(f"expected {want}", t.pos)
        self.i += 1
        return t

    def parse_or(self) -> Expr:
        terms = [self.parse_and()]
        while self.peek().kind == "||":
            self.i += 1
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def parse_and(self) -> Expr:
        terms = [self.parse_operation()]
        while self.peek().kind == "&&":
            self.i += 1
            terms.append(self.parse_operation())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def parse_operation(self) -> Expr:
        negations = 0
        while self.peek().kind == "!":
            self.i += 1
            negations += 1
        expr = self.parse_atom()
        return Not(expr) if negations % 2 else expr

    def parse_atom(self) -> Expr:
        t = self.peek()
        if t.kind == "has":
            self.i += 1
            return Has(t.value)
        if t.kind == "all":
            self.i += 1
            return All()
        if t.kind == "global":
            self.i += 1
            return Global()
        if t.kind == "(":
            self.i += 1
            e = self.parse_or()
            self.take(")")
            return e
        if t.kind == "label":
            self.i += 1
            return self.parse_match(t.value)
        raise SelectorError("expected identifier", t.pos)

    def parse_match(self, key: str) -> Expr:
        t = self.peek()
        self.i += 1
        if t.kind in ("==", "!="):
            return Compare(key, t.kind, self.take("str").value)
        if t.kind == "op" and t.value in ("contains", "starts with", "ends with"):
            return Compare(key, t.value, self.take("str").value)
        if t.kind == "op" and t.value in ("in", "not in"):
            if self.peek().kind != "{":
                raise SelectorError("expected set literal", self.peek().pos)
            self.i += 1
            values: set[str] = set()
            while self.peek().kind != "}":
                values.add(self.take("str").value)
                if self.peek().kind == ",":
                    self.i += 1
                elif self.peek().kind != "}":
                    raise SelectorError("expected , or } in set literal", self.peek().pos)
            self.i += 1
            return In(key, tuple(sorted(values)), negated=t.value == "not in")
        raise SelectorError("expected an operator", t.pos)


def parse_selector(text: str) -> Selector:
    toks = tokenize(text)
    if toks[0].kind == "eof":
        return Selector(All(), text)
    p = _Parser(toks)
    root = p.parse_or()
    if p.peek().kind != "eof":
        raise SelectorError("unexpected content at end of selector", p.peek().pos)
    return Selector(root, text)


def validate_policy_selector(text: str) -> Selector:
    """A policy or rule selector: global() is not allowed anywhere (Calico's
    check is a substring test, so even inside a quoted value)."""
    if "global(" in text:
        raise SelectorError("global() is only valid in a rule namespaceSelector", text.index("global("))
    return parse_selector(text)


def validate_namespace_selector(text: str) -> Selector:
    """A rule namespaceSelector: global() is allowed, but only alone."""
    toks = tokenize(text)
    if any(t.kind == "global" for t in toks) and [t.kind for t in toks] != ["global", "eof"]:
        pos = next(t.pos for t in toks if t.kind == "global")
        raise SelectorError("global() cannot be combined with other expressions", pos)
    return parse_selector(text)
