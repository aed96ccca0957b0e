"""The libyaml path reads a long run of one-line plain items (a network
set's nets) without an event per item: it must build exactly the nodes,
spans included, that reading every item builds, wherever the lines that
look like a run are (a block scalar, a quoted string, an item continued on
the next line, an item that is not a string)."""

import pytest

from hepbpf.compiler import yamlsrc
from hepbpf.compiler.yamlsrc import load_documents

N = yamlsrc._RUN_MIN + 5


def _items(indent: str, n: int = N, first: int = 0) -> str:
    return "".join(f"{indent}- 10.{i // 256}.{i % 256}.0/24\n" for i in range(first, first + n))


def _v6(indent: str, n: int = N) -> str:
    return "".join(f"{indent}- 2001:db8:{i:x}::/48\n" for i in range(n))


def _reference(text: str, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(yamlsrc, "_libyaml", None)
        return load_documents(text, source="p.yaml")


CASES = {
    "under a key": "spec:\n  nets:\n" + _items("  ") + "  other: 1\n",
    "indentless": "nets:\n" + _items("") + "after: x\n",
    "v6, at the end": "kind: X\nnets:\n" + _v6("  "),
    "two documents": "a:\n" + _items("  ") + "---\nb:\n" + _v6("  "),
    "in a literal block": "text: |\n" + _items("  ") + "k: v\n",
    "in a folded block": "text: >\n" + _items("  ") + "k: v\n",
    "in a quoted string": 'text: "x\n' + _items("  ") + '  y"\nk: v\n',
    "last item continued": "nets:\n" + _items("  ") + "    more\nk: v\n",
    "continued after a blank": "nets:\n" + _items("  ") + "\n    more\nk: v\n",
    "comments": "nets:\n" + _items("  ") + "  # a comment\n" + _items("  ", first=N) + "# end\nk: v\n",
    "a number among them": "nets:\n" + _items("  ") + "  - 80\n" + _items("  ", first=N),
    "a mapping among them": "nets:\n" + _items("  ") + "  - 1::\n" + _items("  ", first=N),
    "a quoted item among them": "nets:\n" + _items("  ") + "  - '10.9.9.9'\n" + _items("  ", first=N),
    "nested sequences": "a:\n- - x\n" + _items("  ") + "- y\n",
    "deeper runs": "a:\n  b:\n    c:\n" + _items("      ") + "    d:\n" + _items("    ", first=N),
    "empty values around": "a:\nnets:\n" + _items("  ") + "b:\n",
}


@pytest.mark.parametrize("name", CASES)
def test_runs_build_the_nodes_every_item_builds(name, monkeypatch):
    text = CASES[name]
    assert yamlsrc._plain_text(text)
    try:
        slow = yamlsrc._Fast(text, "p.yaml", runs=False).stream()
    except (yamlsrc._Fallback, yamlsrc._pyyaml.YAMLError) as e:
        with pytest.raises(type(e)):
            yamlsrc._Fast(text, "p.yaml").stream()
        return
    assert yamlsrc._Fast(text, "p.yaml").stream() == slow
    assert load_documents(text, source="p.yaml") == slow == _reference(text, monkeypatch)


def test_a_run_is_one_event():
    text = CASES["under a key"]
    blanked, runs = yamlsrc._runs(text)
    assert blanked.count("\n") == text.count("\n") and len(blanked) < len(text)
    assert list(runs) == [2] and runs[2][:2] == (4, "10.0.0.0/24") and len(runs[2][2]) == N - 1


def test_no_runs_where_cr_breaks_lines():
    text = CASES["under a key"].replace("other: 1\n", "other: 1\rx: 2\n")
    assert yamlsrc._runs(text) == (text, {})
