"""Calico's label selector language, as libcalico-go tokenizes, parses,
evaluates and prints it (shared/reference/calico-semantics.md, section 1).

Grammar (L is a label, STR a string literal)::

    selector  := <nothing but spaces/tabs>              -> all()
               | or EOF
    or        := and ( "||" and )*
    and       := operation ( "&&" operation )*
    operation := "!"* ( has(L) | all() | global() | "(" or ")"
                      | L "==" STR | L "!=" STR
                      | L contains STR | L starts with STR | L ends with STR
                      | L in set | L not in set )
    set       := "{" [ STR ( "," STR )* [","] ] "}"

Tokens: whitespace is only space and tab; strings are "..." or '...' with no
escapes; a label is 1 to 512 of [a-zA-Z0-9_./-]; ``has(``, ``all(`` and
``global(`` are written with no space before ``(`` (spaces/tabs inside are
fine); the operator words are only operators right after a label, so
``in == "x"`` compares the label `in`; multi-word operators may be run
together (``startswith``, ``notin``) and need a word boundary after them.

Grammar quirks: ``!`` negates one whole operation (``!a == "x"`` is
``!(a == "x")``) and a run of ``!`` collapses; a set may be empty or end in
a comma; an empty selector is all().

Evaluation: ``k != "v"`` and ``k not in {...}`` are true when k is absent;
every other label test is false when its key is absent. all() and global()
are true (see ``Selector.evaluate`` for the namespace-selector meaning).

``str(selector)`` is Calico's canonical form (``Selector.String()``):
``&&``/``||`` groups in parentheses, ``!`` without a space, values in double
quotes unless they contain one, set members sorted and de-duplicated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

# Calico's LabelKeyMatcher: labels may start with any of these, digits and
# punctuation included, and are at most 512 bytes (all ASCII, so characters).
MAX_LABEL = 512
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
# Calico trims only these (tokenizer trimWhitespace): a newline, CR or
# form feed is not whitespace and makes the selector invalid.
_BLANKS = " \t"

_EXPECTED_OPERATOR = "expected an operator after a label (==, !=, in, not in, contains, starts with, ends with)"


class SelectorError(ValueError):
    """A selector that Calico would reject. ``offset`` is the 0-based
    character offset in the selector text where the problem is."""

    def __init__(self, reason: str, offset: int):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset

    def __str__(self) -> str:
        return self.reason


# --- AST ----------------------------------------------------------------------


def _quote(value: str) -> str:
    # Calico's choice: single quotes only when the value holds a double quote.
    # No escapes exist, so a value holding both kinds cannot be written (and
    # cannot come out of the parser).
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True, slots=True)
class All:
    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True, slots=True)
class Global:
    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True, slots=True)
class Has:
    key: str

    def __str__(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True, slots=True)
class _LabelTest:
    """``key <op> "value"``. Subclasses say how a present value is tested
    and what the result is when the key is absent."""

    key: str
    value: str

    OP: ClassVar[str]
    IF_ABSENT: ClassVar[bool] = False

    def test(self, actual: str) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.key} {self.OP} {_quote(self.value)}"


@dataclass(frozen=True, slots=True)
class Eq(_LabelTest):
    OP = "=="

    def test(self, actual: str) -> bool:
        return actual == self.value


@dataclass(frozen=True, slots=True)
class Ne(_LabelTest):
    OP = "!="
    IF_ABSENT = True  # "not equal" holds when there is no value at all

    def test(self, actual: str) -> bool:
        return actual != self.value


@dataclass(frozen=True, slots=True)
class Contains(_LabelTest):
    OP = "contains"

    def test(self, actual: str) -> bool:
        return self.value in actual


@dataclass(frozen=True, slots=True)
class StartsWith(_LabelTest):
    OP = "starts with"

    def test(self, actual: str) -> bool:
        return actual.startswith(self.value)


@dataclass(frozen=True, slots=True)
class EndsWith(_LabelTest):
    OP = "ends with"

    def test(self, actual: str) -> bool:
        return actual.endswith(self.value)


@dataclass(frozen=True, slots=True)
class _SetTest:
    """``key in {...}`` / ``key not in {...}``. ``values`` is kept sorted and
    de-duplicated, as Calico's StringSet is, so equal sets compare equal and
    print the same."""

    key: str
    values: tuple[str, ...]

    OP: ClassVar[str]
    IF_ABSENT: ClassVar[bool] = False

    def __post_init__(self) -> None:
        # Sorting str by code point is UTF-8 byte order, which is Go's.
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))

    def test(self, actual: str) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.key} {self.OP} {{{', '.join(map(_quote, self.values))}}}"


@dataclass(frozen=True, slots=True)
class In(_SetTest):
    OP = "in"

    def test(self, actual: str) -> bool:
        return actual in self.values


@dataclass(frozen=True, slots=True)
class NotIn(_SetTest):
    OP = "not in"
    IF_ABSENT = True  # an absent key is not in any set, so `k not in {}` is always true

    def test(self, actual: str) -> bool:
        return actual not in self.values


@dataclass(frozen=True, slots=True)
class Not:
    expr: Expr

    def __str__(self) -> str:
        return f"!{self.expr}"


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Expr, ...]

    def __str__(self) -> str:
        return "(" + " && ".join(map(str, self.terms)) + ")"


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Expr, ...]

    def __str__(self) -> str:
        return "(" + " || ".join(map(str, self.terms)) + ")"


Expr = All | Global | Has | Eq | Ne | Contains | StartsWith | EndsWith | In | NotIn | Not | And | Or


def _evaluate(expr: Expr, labels: Mapping[str, str], all_value: bool, global_value: bool) -> bool:
    match expr:
        case All():
            return all_value
        case Global():
            return global_value
        case Has(key):
            return key in labels
        case _LabelTest() | _SetTest():
            if expr.key not in labels:
                return expr.IF_ABSENT  # true only for != and not in
            return expr.test(labels[expr.key])
        case Not(inner):
            return not _evaluate(inner, labels, all_value, global_value)
        case And(terms):
            return all(_evaluate(t, labels, all_value, global_value) for t in terms)
        case Or(terms):
            return any(_evaluate(t, labels, all_value, global_value) for t in terms)
    raise TypeError(f"not a selector expression: {expr!r}")


def _keys(expr: Expr) -> set[str]:
    match expr:
        case Has(key):
            return {key}
        case _LabelTest() | _SetTest():
            return {expr.key}
        case Not(inner):
            return _keys(inner)
        case And(terms) | Or(terms):
            return set().union(*map(_keys, terms))
    return set()


@dataclass(frozen=True, slots=True)
class Selector:
    root: Expr

    def evaluate(self, labels: Mapping[str, str], *, all_value: bool = True, global_value: bool = True) -> bool:
        """Whether the labels match. ``all_value``/``global_value`` are what
        all() and global() evaluate to: both true for a plain label selector.
        Calico rewrites a namespaceSelector (all() -> has(namespace label),
        global() -> its negation), so a caller evaluating one for a
        non-namespaced resource passes all_value=False (§1.5)."""
        return _evaluate(self.root, labels, all_value, global_value)

    def labels_used(self) -> frozenset[str]:
        return frozenset(_keys(self.root))

    def __str__(self) -> str:
        return str(self.root)


# --- tokenizer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    # "label", "string", "has" (value = the label), "all()", "global()",
    # "eof", or the spelling of an operator or punctuation.
    kind: str
    value: str
    offset: int


# Tried in this order, as Calico does. A multi-word operator may have any run
# of blanks between its words, or none ("startswith", "notin").
_OPERATORS = (("contains",), ("starts", "with"), ("ends", "with"), ("not", "in"), ("in",))
_PUNCTUATION = frozenset("(){},")
_DOUBLED = {"&": "&&", "|": "||"}


def _skip_blanks(text: str, i: int) -> int:
    while i < len(text) and text[i] in _BLANKS:
        i += 1
    return i


def _no_identifier(text: str, i: int) -> str:
    if i == len(text):
        return "expected identifier"
    reason = f"unexpected character {text[i]!r}, expected identifier"
    if text[i].isspace():
        reason += " (only space and tab separate tokens)"
    return reason


def _identifier(text: str, i: int) -> tuple[str, int]:
    end = i
    while end < len(text) and text[end] in _LABEL_CHARS:
        end += 1
    if end == i:
        raise SelectorError(_no_identifier(text, i), i)
    if end - i > MAX_LABEL:
        raise SelectorError(f"label too long (max {MAX_LABEL})", i)
    return text[i:end], end


def _operator(text: str, i: int) -> tuple[str, int] | None:
    """The operator word(s) at i, if followed by a word boundary (so `inf`
    is not `in` followed by `f`)."""
    for words in _OPERATORS:
        j = i
        for word in words:
            if not text.startswith(word, j):
                break
            j += len(word)
            if len(words) > 1:
                j = _skip_blanks(text, j)
        else:
            if j == len(text) or text[j] not in _LABEL_CHARS:
                return " ".join(words), j
    return None


def _call(text: str, i: int, name: str) -> tuple[str, int] | None:
    """``has(label)``, ``all()`` or ``global()`` at i: the name and "(" must
    touch (``has (x)`` is the label `has` followed by a parenthesis)."""
    if not text.startswith(name + "(", i):
        return None
    j = _skip_blanks(text, i + len(name) + 1)
    label = ""
    if name == "has":
        label, j = _identifier(text, j)
        j = _skip_blanks(text, j)
    if not text.startswith(")", j):
        raise SelectorError(f"expected ) after {name}(", j)
    return label, j + 1


def _tokenize(text: str) -> list[_Token]:
    """The whole token list, or the first tokenizer error. Like Calico, the
    text is tokenized before parsing starts, so a tokenizer error anywhere
    wins over a parse error earlier in the text."""
    tokens: list[_Token] = []
    i = 0
    while True:
        i = _skip_blanks(text, i)
        if i == len(text):
            tokens.append(_Token("eof", "", i))
            return tokens
        after_label = bool(tokens) and tokens[-1].kind == "label"
        c = text[i]
        if c in _PUNCTUATION:
            tokens.append(_Token(c, c, i))
            i += 1
        elif c in "\"'":
            # No escapes: the string ends at the next matching quote.
            end = text.find(c, i + 1)
            if end < 0:
                raise SelectorError("unterminated string", i)
            tokens.append(_Token("string", text[i + 1:end], i))
            i = end + 1
        elif c == "=":
            if not text.startswith("==", i):
                # After a label an operator is what is missing (`a = "b"`).
                raise SelectorError(_EXPECTED_OPERATOR if after_label else "expected ==", i)
            tokens.append(_Token("==", "==", i))
            i += 2
        elif c == "!":
            kind = "!=" if text.startswith("!=", i) else "!"
            tokens.append(_Token(kind, kind, i))
            i += len(kind)
        elif c in _DOUBLED:
            op = _DOUBLED[c]
            if not text.startswith(op, i):
                # `a & b`: the bare label `a` is the real problem.
                raise SelectorError(_EXPECTED_OPERATOR if after_label else f"expected {op}", i)
            tokens.append(_Token(op, op, i))
            i += 2
        elif after_label:
            # Operator words only count here; anywhere else `in`, `contains`
            # etc. are ordinary labels (`in == "x"` is valid).
            found = _operator(text, i)
            if found is None:
                raise SelectorError(_EXPECTED_OPERATOR, i)
            tokens.append(_Token(found[0], found[0], i))
            i = found[1]
        else:
            for name in ("has", "all", "global"):
                call = _call(text, i, name)
                if call is not None:
                    kind = "has" if name == "has" else f"{name}()"
                    tokens.append(_Token(kind, call[0], i))
                    i = call[1]
                    break
            else:
                label, end = _identifier(text, i)
                tokens.append(_Token("label", label, i))
                i = end


# --- parser -------------------------------------------------------------------

_LABEL_TESTS: dict[str, Callable[[str, str], Expr]] = {
    "==": Eq, "!=": Ne, "contains": Contains, "starts with": StartsWith, "ends with": EndsWith,
}
_SET_TESTS: dict[str, Callable[[str, tuple[str, ...]], Expr]] = {"in": In, "not in": NotIn}


def _describe(tok: _Token) -> str:
    if tok.kind == "eof":
        return "end of selector"
    if tok.kind in ("label", "string"):
        return f"{tok.kind} {tok.value!r}"
    if tok.kind == "has":
        return f"'has({tok.value})'"
    return repr(tok.kind)


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def next(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def expect(self, kind: str, reason: str) -> _Token:
        if self.peek().kind != kind:
            raise SelectorError(reason, self.peek().offset)
        return self.next()

    def or_expr(self) -> Expr:
        terms = [self.and_expr()]
        while self.peek().kind == "||":
            self.next()
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def and_expr(self) -> Expr:
        terms = [self.operation()]
        while self.peek().kind == "&&":
            self.next()
            terms.append(self.operation())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def operation(self) -> Expr:
        # `!` binds to one whole operation, so `!a == "x"` is `!(a == "x")`;
        # a run of them collapses to one negation or none.
        negate = False
        while self.peek().kind == "!":
            self.next()
            negate = not negate
        expr = self.primary()
        return Not(expr) if negate else expr

    def primary(self) -> Expr:
        tok = self.next()
        match tok.kind:
            case "has":
                return Has(tok.value)
            case "all()":
                return All()
            case "global()":
                return Global()
            case "(":
                expr = self.or_expr()
                self.expect(")", "expected )")
                return expr
            case "label":
                return self.label_test(tok.value)
        raise SelectorError(f"unexpected {_describe(tok)}, expected identifier", tok.offset)

    def label_test(self, key: str) -> Expr:
        op = self.next()
        if op.kind in _LABEL_TESTS:
            # Only a literal on the right: `b == b` is an error.
            value = self.expect("string", "expected a string literal").value
            return _LABEL_TESTS[op.kind](key, value)
        if op.kind in _SET_TESTS:
            return _SET_TESTS[op.kind](key, self.set_literal())
        raise SelectorError(_EXPECTED_OPERATOR, op.offset)

    def set_literal(self) -> tuple[str, ...]:
        self.expect("{", "expected set literal")
        values: list[str] = []
        # Calico's loop: a string, then a comma or the end; so `{}` and a
        # trailing comma (`{"a",}`) are accepted.
        while self.peek().kind == "string":
            values.append(self.next().value)
            if self.peek().kind != ",":
                self.expect("}", "expected , or }")
                return tuple(values)
            self.next()
        self.expect("}", "expected a string literal or }")
        return tuple(values)


@functools.lru_cache(maxsize=4096)
def parse_selector(text: str) -> Selector:
    """Parse a selector; raises SelectorError for anything Calico rejects.
    (Cached: a policy repeats a few selectors in thousands of rules, and a
    Selector is immutable.)"""
    tokens = _tokenize(text)
    if tokens[0].kind == "eof":
        return Selector(All())  # empty (or blank) selector selects everything
    parser = _Parser(tokens)
    try:
        root = parser.or_expr()
    except RecursionError:
        # Go has no such limit; a few hundred nested parentheses is not a
        # selector anyone writes, so refuse rather than crash.
        raise SelectorError("selector nested too deeply", parser.peek().offset) from None
    if parser.peek().kind != "eof":
        raise SelectorError("unexpected content at end of selector", parser.peek().offset)
    return Selector(root)


def validate_policy_selector(text: str) -> Selector:
    """A policy selector or a rule selector/notSelector. Calico rejects
    global() there with a plain substring test, so even a quoted value such
    as `a == "global(x)"` is refused."""
    selector = parse_selector(text)
    if "global(" in text:
        raise SelectorError("global() is only valid in a rule namespaceSelector", text.index("global("))
    return selector


def validate_namespace_selector(text: str) -> Selector:
    """A rule namespaceSelector: global() is allowed, but only on its own.
    Calico (VAL validateEntityRule) checks any value containing "global("
    other than exactly "global()": its tokens must be [global(), EOF]."""
    selector = parse_selector(text)
    if "global(" in text and text != "global()":
        if [t.kind for t in _tokenize(text)] != ["global()", "eof"]:
            raise SelectorError("global() cannot be combined with other selectors", text.index("global("))
    return selector


def _prefixed(expr: Expr, prefix: str) -> Expr:
    match expr:
        case Has(key):
            return Has(prefix + key)
        case _LabelTest() | _SetTest():
            return type(expr)(prefix + expr.key, expr.values if isinstance(expr, _SetTest) else expr.value)
        case Not(inner):
            return Not(_prefixed(inner, prefix))
        case And(terms) | Or(terms):
            return type(expr)(tuple(_prefixed(t, prefix) for t in terms))
    return expr  # all() and global() are not labels


def with_label_prefix(selector: Selector, prefix: str) -> Selector:
    """Every label key prefixed, all() and global() kept: what Calico's
    PrefixVisitor does to a rule's serviceAccounts.selector (`pcsa.`)."""
    return Selector(_prefixed(selector.root, prefix))


def all_of(*selectors: Selector | None) -> Selector | None:
    """The AND of the given selectors (None ones skipped), as Calico joins a
    rule's service-account clause and its selector."""
    roots = [s.root for s in selectors if s is not None]
    if not roots:
        return None
    return Selector(roots[0] if len(roots) == 1 else And(tuple(roots)))
