"""Allocation: the passes build millions of small objects; two things keep
that from costing more than the objects themselves.

* ``gc_paused``: the cyclic garbage collector is off while a pass runs.
  The objects (YAML nodes, IR dataclasses, tuples, bit vectors) form no
  cycles and reference counting frees them, but the collector walks the
  young objects every 700 allocations and, as the heap grows, the whole
  heap again and again: at 10,000 rules and 100,000 CIDRs that was a third
  of the compile time, and it collected nothing.
* ``builder``: a frozen dataclass's ``__init__`` sets each field through
  ``object.__setattr__``; the builder sets the slots directly, in half the
  time, for the classes made once per YAML node or map entry.
"""

from __future__ import annotations

import dataclasses
import functools
import gc


def gc_paused(fn):
    """``fn`` with the cyclic collector off while it runs (and back on after,
    if it was on: nested calls leave it to the outermost)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return run


def builder(cls):
    """A function taking every field of ``cls`` (a frozen dataclass with
    slots and no ``__post_init__``) positionally and returning the instance
    ``cls(...)`` would, equal to it in every respect."""
    if not (dataclasses.is_dataclass(cls) and "__slots__" in vars(cls)) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: a slotted dataclass without __post_init__ is needed")
    names = [f.name for f in dataclasses.fields(cls)]
    env = {"new": object.__new__, "cls": cls}
    env.update({f"set_{n}": vars(cls)[n].__set__ for n in names})
    args = ", ".join(names)
    body = "".join(f"    set_{n}(o, {n})\n" for n in names)
    exec(f"def build({args}):\n    o = new(cls)\n{body}    return o\n", env)  # as dataclasses writes __init__
    build = env["build"]
    build.__name__ = build.__qualname__ = f"build_{cls.__name__}"
    return build
