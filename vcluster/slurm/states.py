"""Slurm node state words and the rule that says whether a node is "in" a state.

A node's state is a list of upper-case words, base state first, then flags:
``["IDLE"]``, ``["IDLE", "DRAIN"]``, ``["DOWN", "NOT_RESPONDING"]``. The
dynamic-node markers (``DYNAMIC_NORM``, ``DYNAMIC_FUTURE``) are not state
words; parsers report them as ``Node.dynamic``. The words ``DRAINED`` and
``DRAINING`` (sinfo's names) are derived from base state + ``DRAIN``, and
``ABSENT`` stands for a node Slurm does not know.

Node state words are the same from 22.05 to 25.11 (25.05 added the flags
``BLOCKED`` and ``EXTERNAL``). Job states are one word in ``scontrol`` and
in 22.05/23.02's ``squeue --json``, a list (base state, then flags) from
23.11; :func:`job_state` turns the list into the word scontrol shows.
"""

#: Base node states (22.05 to 25.11).
BASE_STATES = ("IDLE", "ALLOCATED", "MIXED", "DOWN", "ERROR", "FUTURE", "UNKNOWN")

#: Base states in which a node can run work.
USABLE = ("IDLE", "ALLOCATED", "MIXED")

#: Flags that stop a usable base state from counting as that state.
BLOCKING_FLAGS = ("DRAIN", "FAIL", "NOT_RESPONDING", "POWERED_DOWN", "POWERING_DOWN",
                  "POWER_DOWN", "POWERING_UP", "MAINTENANCE", "REBOOT_REQUESTED",
                  "REBOOT_ISSUED", "INVALID_REG", "BLOCKED")

#: Job state flags in the order Slurm's ``job_state_string()`` lets them
#: stand for the whole state (src/common/slurm_protocol_defs.c).
JOB_FLAG_PRECEDENCE = ("COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED",
                       "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED",
                       "RESV_DEL_HOLD", "SIGNALING")

#: Job states (the one word of :func:`job_state`) of a job that holds its
#: nodes now: a node with such a job is busy, and removing it ends the job.
JOB_ON_NODES = ("CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "STOPPED", "SIGNALING",
                "STAGE_OUT", "RESIZING")
#: Job states of a job Slurm has not finished: waiting, or on its nodes.
#: ``squeue`` also lists jobs that ended within ``MinJobAge`` (COMPLETED,
#: CANCELLED, FAILED, TIMEOUT, NODE_FAIL ...), which are in neither group.
JOB_NOT_DONE = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD") \
    + JOB_ON_NODES

#: Markers of dynamic nodes; not state words.
DYNAMIC_MARKERS = ("DYNAMIC_NORM", "DYNAMIC_FUTURE")

#: Pseudo state of a node Slurm does not list.
ABSENT = "ABSENT"

#: Suffix characters of the short state form (``idle*``, ``down~``).
SUFFIXES = {"*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP",
            "%": "POWERING_DOWN", "!": "POWER_DOWN", "@": "REBOOT_REQUESTED",
            "$": "MAINTENANCE", "^": "REBOOT_ISSUED", "-": "PLANNED"}


def _word(token):
    """``'down*'`` -> ``['DOWN', 'NOT_RESPONDING']``."""
    token = token.strip()
    flags = []
    while token and token[-1] in SUFFIXES:
        flags.insert(0, SUFFIXES[token[-1]])
        token = token[:-1]
    return [token.upper()] + flags if token else flags


def split(state, flags=()):
    """State words of ``'IDLE+DRAIN+DYNAMIC_NORM'`` (or of ``'idle'`` plus ``flags``).

    Returns ``(words, dynamic)``: words without duplicates, base state first,
    and whether a dynamic-node marker was present.
    """
    words = []
    for token in [t for t in str(state or "").split("+") if t] + [str(f) for f in flags]:
        for word in _word(token):
            if word not in words:
                words.append(word)
    dynamic = any(m in words for m in DYNAMIC_MARKERS)
    return [w for w in words if w not in DYNAMIC_MARKERS], dynamic


def derived(words):
    """``words`` plus DRAINED / DRAINING when they apply."""
    out = list(words)
    if "DRAIN" in words and words:
        busy = words[0] in ("ALLOCATED", "MIXED") or "COMPLETING" in words
        out.append("DRAINING" if busy else "DRAINED")
    return out


def wanted_words(states):
    """Normalise ``'idle,drain'`` / ``['IDLE', 'drain']`` to a tuple of upper-case words."""
    if isinstance(states, str):
        states = states.replace("+", ",").split(",")
    return tuple(s.strip().upper() for s in states if s and s.strip())


def matches(words, states):
    """Whether a node whose state words are ``words`` is in any of ``states``.

    * A flag (or DRAINED, DRAINING, ABSENT) matches when the node has it.
    * A base state matches when it is the node's base state, except that a
      usable base state (IDLE, ALLOCATED, MIXED) does not count while a
      blocking flag (DRAIN, NOT_RESPONDING, FAIL...) is set that is not
      itself wanted: ``IDLE+DRAIN`` is not "IDLE", it is "DRAIN".

    ``words == []`` is a node Slurm does not know, which only ``ABSENT`` matches.
    """
    wanted = set(wanted_words(states))
    if not words:
        return ABSENT in wanted
    have = derived(words)
    base, flags = have[0], set(have[1:])
    if flags & wanted:
        return True
    if base not in wanted:
        return False
    if base in USABLE:
        return not (flags & set(BLOCKING_FLAGS))
    return True


def usable(words):
    """Whether the node can take new work (IDLE/MIXED/ALLOCATED, no blocking flag)."""
    return matches(words, USABLE)


def job_state(words):
    """The one word ``scontrol`` shows for a job whose ``job_state`` list is ``words``.

    ``["RUNNING"]`` -> ``RUNNING``; ``["CANCELLED", "COMPLETING"]`` ->
    ``COMPLETING``; ``["PENDING", "REQUEUED"]`` -> ``REQUEUED``: a flag of
    :data:`JOB_FLAG_PRECEDENCE` wins over the base state, as in Slurm's
    ``job_state_string()``. A string is returned upper-cased as it is.
    """
    if isinstance(words, str):
        return words.strip().upper()
    words = [str(w).strip().upper() for w in words if str(w).strip()]
    for flag in JOB_FLAG_PRECEDENCE:
        if flag in words:
            return flag
    return words[0] if words else ""
