"""The Context protocols, their Salt implementations and the test fakes cannot drift apart.

Every method the library calls on ``ctx.keys``, ``ctx.slurm``, ``ctx.salt``
and ``ctx.events`` is declared in :mod:`vcluster.context`; the Salt-backed
classes of :mod:`vcluster.saltlink` must implement each of them with a
signature that takes every call the protocol allows. The fakes of the unit
tests and of the simulated site (tests/sim) implement only what their tests
use, but what they implement must take the same calls, so a protocol change
that they miss fails here, not as a puzzling error in a distant test.
"""

import importlib
import inspect
import pathlib

import pytest

from vcluster import context, saltlink

TESTS = pathlib.Path(__file__).resolve().parents[1]

#: The Salt implementation of each protocol.
REAL = {"keys": saltlink.WheelKeys, "slurm": saltlink.ControllerSlurm, "salt": saltlink.LocalActions,
        "events": saltlink.MasterEvents}

#: The library's package directory (its calls on the context are read from the source).
LIBRARY = pathlib.Path(context.__file__).resolve().parent


def mismatch(proto_fn, impl_fn):
    """Why ``impl_fn`` does not take every call ``proto_fn`` allows, or None."""
    proto = [p for p in inspect.signature(proto_fn).parameters.values() if p.name != "self"]
    impl = [p for p in inspect.signature(impl_fn).parameters.values() if p.name != "self"]
    kinds = {p.kind for p in impl}
    var_pos = inspect.Parameter.VAR_POSITIONAL in kinds
    var_kw = inspect.Parameter.VAR_KEYWORD in kinds
    named = {p.name: p for p in impl if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    positional = [p for p in impl if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for index, p in enumerate(proto):
        if p.kind == p.VAR_KEYWORD:
            if not var_kw:
                return f"takes no **{p.name}"
            continue
        if p.kind == p.VAR_POSITIONAL:
            if not var_pos:
                return f"takes no *{p.name}"
            continue
        mine = named.get(p.name)
        if mine is None:
            if not (var_pos and var_kw):
                return f"has no parameter {p.name!r}"
            continue
        if p.kind == p.POSITIONAL_OR_KEYWORD and (index >= len(positional) or positional[index].name != p.name):
            return f"does not take {p.name!r} as positional argument {index + 1}"
        if p.default is not p.empty and mine.default is mine.empty:
            return f"needs {p.name!r}, which callers may leave out"
    proto_names = {q.name for q in proto}
    extra = [p.name for p in named.values() if p.name not in proto_names and p.default is p.empty]
    if extra:
        return f"needs {', '.join(extra)}, which callers never pass"
    return None


def fakes():
    """``(where, class, field)`` for every class of the test modules that implements part of a protocol.

    A class counts as a fake of a protocol when it has one of its methods;
    provider fakes (``create``, ``list`` or ``suspend`` beside their ``delete``) are not key stores.
    """
    found = []
    paths = sorted((TESTS / "unit").glob("test_*.py")) + [TESTS / "sim" / "site.py"]
    for path in paths:
        module = importlib.import_module(".".join(path.relative_to(TESTS.parent).with_suffix("").parts))
        for name, cls in vars(module).items():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            if any(callable(getattr(cls, m, None)) for m in ("create", "list", "suspend")):
                continue  # a provider
            for field, protocol in context.PROTOCOLS.items():
                if any(callable(getattr(cls, m, None)) for m in context.protocol_methods(protocol)):
                    found.append((f"{module.__name__}.{name}", cls, field))
    return found


def test_the_protocols_cover_every_call_of_the_library():
    """``ctx.<field>.<method>`` and ``slurm_call(ctx, "<method>"`` anywhere in the library name a declared method."""
    import re

    calls = set()
    for path in list(LIBRARY.rglob("*.py")) + list((LIBRARY.parent / "_runners").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        calls |= {(f, m) for f, m in re.findall(r"\bctx\.(keys|slurm|salt|events)\.([a-z]\w*)", text)}
        calls |= {("slurm", m) for m in re.findall(r"slurm_call\(\s*ctx,\s*\"(\w+)\"", text)}
    assert calls, "no calls found: the pattern no longer matches the library"
    undeclared = sorted(f"ctx.{f}.{m}" for f, m in calls
                        if m not in context.protocol_methods(context.PROTOCOLS[f]) and m != "close")
    assert undeclared == []


@pytest.mark.parametrize("field", sorted(REAL))
def test_the_salt_implementations_are_complete_and_take_every_call(field):
    protocol, impl = context.PROTOCOLS[field], REAL[field]
    problems = {}
    for name in context.protocol_methods(protocol):
        method = getattr(impl, name, None)
        if method is None:
            problems[name] = "missing"
            continue
        why = mismatch(getattr(protocol, name), method)
        if why:
            problems[name] = why
    assert problems == {}, f"{impl.__name__} against {protocol.__name__}"


def test_every_protocol_method_is_typed():
    untyped = []
    for protocol in context.PROTOCOLS.values():
        for name in context.protocol_methods(protocol):
            sig = inspect.signature(getattr(protocol, name))
            if sig.return_annotation is sig.empty:
                untyped.append(f"{protocol.__name__}.{name} -> ?")
            untyped += [f"{protocol.__name__}.{name}({p.name})" for p in sig.parameters.values()
                        if p.name != "self" and p.annotation is p.empty]
    assert untyped == []


def test_the_fakes_take_the_same_calls():
    found = fakes()
    # the discovery works: fakes of every protocol, from the unit tests and the simulated site
    assert {w for w, _, _ in found} >= {"tests.unit.test_autoscale.MemorySlurm", "tests.unit.test_suspend.FakeKeys",
                                        "tests.unit.test_liveness.Salt", "tests.sim.site.SimController",
                                        "tests.sim.site.SimEvents"}
    assert {f for _, _, f in found} == set(context.PROTOCOLS)
    problems = {}
    for where, cls, field in found:
        protocol = context.PROTOCOLS[field]
        for name in context.protocol_methods(protocol):
            method = getattr(cls, name, None)
            if callable(method):
                why = mismatch(getattr(protocol, name), method)
                if why:
                    problems[f"{where}.{name}"] = why
    assert problems == {}


@pytest.mark.parametrize(("impl", "why"), [
    ("def f(self, name): ...", "has no parameter 'states'"),
    ("def f(self, states, name, timeout, interval=0.5): ...", "does not take 'name' as positional argument 1"),
    ("def f(self, name, states, timeout, interval): ...", "needs 'interval', which callers may leave out"),
    ("def f(self, name, states, timeout, interval=0.5, extra): ...", None),
    ("def f(self, name, states, timeout, interval=0.5, *, extra): ...", "needs extra, which callers never pass"),
    ("def f(self, *args, **kwargs): ...", None),
    ("def f(self, name, states, timeout, interval=0.5, retries=3): ...", None),
])
def test_the_signature_check_itself(impl, why):
    """A check that cannot fail proves nothing: each kind of drift is caught."""
    if "interval=0.5, extra)" in impl:  # not valid Python: a parameter without default after one with
        with pytest.raises(SyntaxError):
            compile(impl, "<impl>", "exec")
        return
    scope = {}
    exec(compile(impl, "<impl>", "exec"), scope)  # noqa: S102 - the test's own literal source
    assert mismatch(context.SlurmController.watch_node_state, scope["f"]) == why
