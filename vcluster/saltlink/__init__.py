"""Salt-backed implementations of the engine's interfaces (master side).

Only the runner, the master's engines and the tests import this: it needs
the master's ``opts``. :func:`context` builds a
:class:`~vcluster.context.Context` of them; each lives in a module of its
concern:

* :mod:`.keys`: minion keys, listed and deleted through the wheel client and
  generated in this process (the private key never rides a wheel return);
* :mod:`.controller`: Slurm, through the controller minion's ``slurm``
  execution module (the local client), and calls collected later;
* :mod:`.minions`: state runs and small probes on minions (the local client);
* :mod:`.events`: the master event bus and the runner's progress events.

This module also compiles the master's own pillar (:func:`load_policy`).
"""

import contextlib
import threading

import salt.pillar

from vcluster import policy as _policy
from vcluster.context import Context
from vcluster.errors import PolicyError
from vcluster.registry import Registry
from vcluster.saltlink.controller import PENDING_CHECK, ControllerSlurm, PendingCall, _Local
from vcluster.saltlink.events import MasterEvents
from vcluster.saltlink.keys import KEY_SIZE, KEY_STATES, WHEEL_ATTEMPTS, WHEEL_BACKOFF, WHEEL_DEADLINE, WheelKeys
from vcluster.saltlink.minions import LocalActions, slurmd_age, summarize

__all__ = ["KEY_SIZE", "KEY_STATES", "PENDING_CHECK", "WHEEL_ATTEMPTS", "WHEEL_BACKOFF", "WHEEL_DEADLINE",
           "ControllerSlurm", "LocalActions", "MasterEvents", "PendingCall", "WheelKeys", "_Local", "context",
           "load_policy", "slurmd_age", "summarize"]


#: The master's pillar compilers not in use, by what they were built for.
_idle_compilers = {}
_compilers_lock = threading.Lock()


@contextlib.contextmanager
def _pillar_compiler(opts):
    """One of the master's own :class:`salt.pillar.Pillar`, lent to this thread.

    Building one loads its renderer, module and ext_pillar loaders (about
    0.1 s under the reactor's GIL, most of a runner's start-up); compiling
    it again reads and renders the pillar afresh every time (12 ms). A
    compiler is not shared by two threads at once, so each is lent to one
    caller and given back after: reactor handlers run in the master's
    reactor threads (vcluster asks for 64 of them so that a burst of joins
    does not queue), and a burst of 32 joins, whose compiles take turns
    under the GIL anyway, builds a few compilers instead of one per thread.
    """
    key = (opts.get("conf_file"), opts["id"], opts.get("saltenv") or "base", opts.get("pillarenv"))
    with _compilers_lock:
        idle = _idle_compilers.setdefault(key, [])
        compiler = idle.pop() if idle else None
    if compiler is None:
        compiler = salt.pillar.get_pillar(opts, {}, opts["id"], saltenv=key[2], pillarenv=key[3])
    try:
        yield compiler
    finally:
        with _compilers_lock:
            _idle_compilers[key].append(compiler)


def load_policy(opts):
    """Compile the master's own pillar and validate its ``vcluster`` key."""
    with _pillar_compiler(opts) as compiler:
        pillar = compiler.compile_pillar()
    errors = pillar.get("_errors")
    if errors:
        raise PolicyError(f"the master's pillar does not render: {errors[0]}")
    data = pillar.get("vcluster")
    if data is None:
        data = opts.get("vcluster")
    if data is None:
        raise PolicyError(
            f"pillar vcluster is missing for the master (id {opts['id']!r}); assign pillar/vcluster.sls to it"
        )
    return _policy.load(data)


def context(opts, jid_event=None, actor="vcluster"):
    """A ready :class:`~vcluster.context.Context` for one runner call."""
    pol = load_policy(opts)
    slurm = ControllerSlurm(opts, pol.controller)
    return Context(
        policy=pol,
        registry=Registry(pol.registry),
        keys=WheelKeys(opts),
        slurm=slurm,
        salt=LocalActions(opts, client=slurm.client),  # one local client per call
        events=MasterEvents(opts, jid_event),
        master_ports=(opts.get("ret_port", 4506), opts.get("publish_port", 4505)),
        actor=actor,
    )
