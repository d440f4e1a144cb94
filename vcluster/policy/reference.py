"""The pillar reference of docs/policy.md, generated from the validator's schema.

``python -m vcluster.policy --reference`` prints it; ``--update
docs/policy.md`` replaces the part between :data:`BEGIN` and :data:`END`
(everything above it is written by hand); ``--check docs/policy.md`` exits
1 when that part differs from the schema.
"""

import collections.abc

from vcluster.policy import sections as s
from vcluster.policy.provider_options import driver_options
from vcluster.policy.schema import REQUIRED

BEGIN = "<!-- BEGIN GENERATED REFERENCE: python -m vcluster.policy --update docs/policy.md -->"
END = "<!-- END GENERATED REFERENCE -->"
COMMAND = "python -m vcluster.policy --update docs/policy.md"


def _followers(section):
    """(section, doc) of the tables shown right after ``section``: the per-driver ones."""
    if section is s.PROVIDER_COMMON:
        return [(d.options, d.doc) for d in driver_options().values()]
    if section is s.PROFILE:
        return [(d.extra, "") for d in driver_options().values()]
    return []


def _cell(text):
    out, prev = [], ""
    for char in str(text):
        out.append("\\|" if char == "|" and prev != "\\" else char)
        prev = char
    return "".join(out).replace("\n", " ")


def _literal(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, collections.abc.Mapping):
        return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    return str(value)


def _default(key):
    if key.shown_default is not None:
        return key.shown_default
    if key.default is REQUIRED:
        return "**required**"
    if key.section is not None and not key.named:
        return "see its keys"
    if key.default is None:
        return "none"
    return f"`{_literal(key.default)}`"


def _table(section, doc):
    lines = [f"### `{section.path}`", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in section.values():
        lines.append(f"| `{key.name}` | {_cell(key.type_text)} | {_cell(_default(key))} | {_cell(key.meaning)} |")
    return lines + [""]


def _walk(section, doc, out):
    out += _table(section, doc)
    for follower, fdoc in _followers(section):
        out += _table(follower, fdoc)
    for key in section.values():
        if key.section is not None:
            _walk(key.section, key.section.doc, out)


def reference():
    """The generated part of docs/policy.md, markers included."""
    out = [
        BEGIN,
        "## Reference",
        "",
        "Every key the validator accepts, generated from its schema (`vcluster/policy/sections.py`, "
        f"each driver's `vcluster/providers/<driver>_options.py`) by `{COMMAND}`: edit the schema, not this part. "
        "A default of *none* means unset; *driver: x* is what the provider uses when the key is unset.",
        "",
    ]
    _walk(s.TOP, s.TOP.doc, out)
    return "\n".join(out + [END]) + "\n"


def split(text):
    """(hand-written part above, generated part, anything after it) of docs/policy.md's text."""
    start = text.find(BEGIN)
    end = text.find(END, start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"no generated reference section (lines {BEGIN!r} ... {END!r})")
    return text[:start], text[start:end + len(END)] + "\n", text[end + len(END):].lstrip("\n")


def update(text):
    """``text`` of docs/policy.md with its generated part replaced by :func:`reference`."""
    head, _old, tail = split(text)
    return head + reference() + (("\n" + tail) if tail else "")
