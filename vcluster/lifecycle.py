"""The node lifecycle: the one writer of node state, and the ways in and out.

Every move of a node is one call here: the registry transition (a
compare-and-set when ``expect`` is given), its audit row (the registry
writes it in the same transaction) and its ``vcluster/node/<name>/<state>``
event on the master bus. A crash between two moves leaves a state reconcile
recognises. Events that announce a step that is not a move (an instance
created, a slurmd gone silent) go through :func:`announce`, so that no
other module fires node events.

The ways in and out, shared by every feature:

* :func:`allocate` and :func:`create`: names and addresses taken, then the
  instances of a request created (expand, Slurm power-up);
* :func:`remove`: instance, Slurm node, minion key, then name and address,
  for every way a node goes: retire, shrink, power-save retire, reconcile
  and failed joins; what differs between them is a parameter;
* :func:`fail` and :func:`release`: a node that did not make it.

Features (expand and join, retire and shrink, suspend, resume, migrate,
preempt, power save, reconcile, autoscale, liveness) import this module;
it imports none of them: only the state groups (:mod:`vcluster.nodestates`),
:mod:`vcluster.membership` (how a node leaves Slurm), boot files and the
provider retry loop.
"""

import collections.abc
import concurrent.futures
import logging
import os

from vcluster import bootstrap, membership, retry
from vcluster.errors import InvalidTransition, PolicyError, RegistryError, sentence
from vcluster.nodestates import LEAVING
from vcluster.slurm.instance import instance_type

log = logging.getLogger(__name__)

#: Seconds a node's leaving Slurm may take (a static membership re-pushes slurm.conf).
LEAVE_TIMEOUT = 120
#: The steps of :func:`remove` (the names ``strict`` takes).
REMOVE_STEPS = ("instance", "slurm", "key")


# -- moves and announcements ------------------------------------------------------


def move(ctx, name, to_state, expect=None, reason=None, event=None):
    """Move node ``name`` to ``to_state`` and announce it; the new registry node.

    ``expect`` (a state or several) makes it a compare-and-set
    (:class:`InvalidTransition` when the node is elsewhere, and then no
    event); ``reason`` is the registry's reason of the node and of the
    audit row; ``event`` the data of the ``vcluster/node/<name>/<to_state>``
    event (``node`` and ``state`` are added).
    """
    node = ctx.registry.transition(name, to_state, reason=reason, expect=expect, actor=ctx.actor)
    ctx.node_event(name, to_state, **(event or {}))
    return node


def move_many(ctx, names, to_state, expect=None, event=None):
    """:func:`move` of every one of ``names`` in one registry transaction (all or none), then their events."""
    nodes = ctx.registry.transition_many(names, to_state, expect=expect, actor=ctx.actor)
    for node in nodes:
        ctx.node_event(node.name, to_state, **(event or {}))
    return nodes


def announce(ctx, name, what, **data):
    """Fire ``vcluster/node/<name>/<what>`` for a step that is not a move (never with secrets)."""
    ctx.node_event(name, what, **data)


def held(ctx, names, allowed, verb, sep=" or "):
    """``{name: node}`` of registry nodes in one of the ``allowed`` states; else one clear PolicyError."""
    found = {}
    for name in names:
        node = ctx.registry.get(name)
        if node is None or node.state == "released":
            raise PolicyError(f"nodes must be vcluster nodes; {name!r} is not in the registry")
        if node.state not in allowed:
            raise PolicyError(f"node {name} is {node.state}; only {sep.join(allowed)} nodes can be {verb}")
        found[name] = node
    return found


# -- the way in -------------------------------------------------------------------


def allocate(ctx, prof, request_id, count=None, names=None, **data):
    """Take ``count`` names and addresses of ``prof``'s pool (or exactly ``names``); announce each.

    The nodes are ``allocated`` (registry rows with their audit rows); the
    event carries address, profile, request and ``data``.
    """
    pool = ctx.policy.pools[prof.pool]
    mode = ctx.policy.membership_of(prof.name)
    # instance_type: what the node's slurmd registers on Slurm 23.11+ (the states' --instance-type)
    attrs = {"cpus": prof.cpus, "memory": prof.memory, "features": list(prof.features),
             "partition": prof.partition, "membership": mode, "instance_type": instance_type(prof)}
    if names is None:
        nodes = ctx.registry.allocate(pool, prof.name, prof.provider, count, request_id,
                                      membership=mode, actor=ctx.actor, attrs=attrs)
    else:
        nodes = ctx.registry.allocate_named(pool, prof.name, prof.provider, names, request_id,
                                            membership=mode, actor=ctx.actor, attrs=attrs)
    for n in nodes:
        announce(ctx, n.name, "allocated", address=n.address, profile=prof.name, request=request_id, **data)
    return nodes


def create(ctx, prof, provider, nodes, request_id):
    """Create the instances of allocated ``nodes``; ``None``, or why it failed.

    Nodes are ``booting`` before the provider is called: a guest may boot
    and its minion start before the provider's create call returns, and the
    join handler acts on booting nodes only. On failure everything is
    rolled back (instances, keys, names, addresses).
    """
    # one transaction for the whole request (all or none), then the events
    move_many(ctx, [n.name for n in nodes], "booting", expect="allocated")
    created = []
    keygen = _key_workers(len(nodes))
    try:
        held_keys = ctx.keys.all()  # one listing; only a name with a key left needs a delete first
        specs = _specs(ctx, prof, nodes, request_id, held_keys, keygen)
        ctx.events.progress(f"creating {len(specs)} instance(s) with provider {prof.provider}",
                            nodes=[s.name for s in specs])
        instances = retry.create(ctx, prof, provider, specs)  # bounded retries, paused profiles
        created = [i.id for i in instances]
    except Exception as exc:  # noqa: BLE001 - every failure must roll back
        reason = f"creating instances failed: {sentence(exc)}"
        log.warning("expand %s: %s", request_id, reason)
        # no key may be generated (and accepted) after the release below deletes the keys
        keygen.shutdown(wait=True, cancel_futures=True)
        if created:
            quietly(provider.delete, created)
        for n in nodes:
            release(ctx, n.name, reason, delete_instance=False)
        return reason
    finally:
        keygen.shutdown(wait=True)
    # one transaction for the request; a node failed and released while the
    # create call ran is skipped there, and its instance deleted: no orphan
    gone = ctx.registry.update_many({n.name: {"instance_id": inst.id, "host": inst.host}
                                     for n, inst in zip(nodes, instances, strict=True)})
    for n, inst in zip(nodes, instances, strict=True):
        if n.name in gone:
            quietly(provider.delete, [inst.id])
            continue
        announce(ctx, n.name, "created", instance=inst.id, host=inst.host)
    return None


def _key_workers(count):
    """Threads for a request's key pairs: one per core (RSA generation releases the GIL)."""
    workers = max(1, min(count, os.cpu_count() or 1))
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="vcluster-keys")


def _specs(ctx, prof, nodes, request_id, held_keys, keygen):
    """The instance specs of ``nodes``; their boot files are made by ``keygen`` in the background.

    A key pair takes about 46 ms here: a burst of 32 generated before the
    provider's first create call waited 0.75 s on two cores. Each spec's
    boot files (:class:`PendingBootFiles`) are read by the provider when it
    provisions that instance, so the first instances are created while the
    later keys are still being generated, in node order.
    """
    ctx.keys.master_pub()  # asked once, before the threads
    return [
        _spec(ctx, prof, n, request_id,
              PendingBootFiles(n.name, keygen.submit(_boot_files, ctx, prof, n, n.name in held_keys)))
        for n in nodes
    ]


class PendingBootFiles(collections.abc.Sequence):
    """A node's boot files (its minion config and key pair), being generated; reading them waits.

    A sequence of :class:`~vcluster.providers.base.BootFile` to the
    providers; its repr never shows a file's content.
    """

    def __init__(self, name, future):
        self.name = name
        self._future = future

    def _files(self):
        return self._future.result()

    def __getitem__(self, index):
        return self._files()[index]

    def __len__(self):
        return len(self._files())

    def __repr__(self):
        return f"<boot files of {self.name}>"


def _boot_files(ctx, prof, node, stale_key):
    keys = ctx.keys.gen_accept(node.name, clear=stale_key)
    return bootstrap.boot_files(
        node.name, prof, ctx.policy.membership_of(prof.name), ctx.policy.master, keys,
        ctx.keys.master_pub(), master_port=ctx.master_ports[0], publish_port=ctx.master_ports[1],
    )


def _spec(ctx, prof, node, request_id, boot_files):
    from vcluster.providers.base import InstanceSpec

    return InstanceSpec(
        name=node.name,
        address=node.address,
        image=prof.image,
        cpus=prof.cpus,
        memory_mb=prof.memory,
        flavor=prof.flavor,
        network=prof.network,
        boot_files=boot_files,
        tags={"cluster": ctx.policy.cluster, "node": node.name, "profile": prof.name,
              "registry_id": request_id},
        extra=dict(prof.extra),
    )


# -- the ways out -----------------------------------------------------------------


def remove(ctx, node, reason, instance=True, slurm="leave", strict=("instance", "slurm")):
    """Take ``node`` out of everything, then release it.

    In order: its instance (``instance=False``: none to delete, or the
    caller deleted it), Slurm, its minion key, and last its name and
    address (``released`` with ``reason``, and the event; a node neither
    ``retiring`` nor ``failed``, one whose creation failed, goes ``failed``
    just before). ``slurm`` says how it leaves Slurm: ``"leave"`` by its membership (:func:`vcluster.membership.leave`),
    ``"dynamic"`` deleted only when it is a dynamic node and absent is fine
    (a failed join), ``None`` not at all (Slurm powered it down itself).
    A failure of a step named in ``strict`` stops the removal and is
    raised (the node stays as it is; reconcile finishes it); the others
    are logged and the removal goes on.
    """
    name = node.name

    def step(what, func, *args, expected=None):
        if what in strict:
            func(*args)
        else:
            quietly(func, *args, expected=expected)

    if instance and node.instance_id:
        step("instance", ctx.provider(node.provider).delete, [node.instance_id])
    if slurm == "leave":
        step("slurm", membership.leave, ctx, node, LEAVE_TIMEOUT)
    elif slurm == "dynamic" and membership.mode_of(ctx, node) == "dynamic":
        step("slurm", ctx.slurm.delete_node, name, expected="invalid node name")
    step("key", ctx.keys.delete, name)
    if node.state not in LEAVING:
        move(ctx, name, "failed", reason=reason, event={"reason": reason})
    return move(ctx, name, "released", reason=reason, event={"reason": reason})


def retire(ctx, node, reason, expect="draining", slurm="leave"):
    """``retiring``, then :func:`remove` (instance and Slurm steps strict): a drained node goes."""
    move(ctx, node.name, "retiring", expect=expect)
    return remove(ctx, ctx.registry.get(node.name), reason, slurm=slurm)


def fail(ctx, name, reason):
    """Mark ``name`` failed and release everything it holds (also when it was failed already)."""
    try:
        move(ctx, name, "failed", reason=reason, event={"reason": reason})
    except (InvalidTransition, RegistryError):
        node = ctx.registry.get(name)
        if node is None or node.state != "failed":
            return
        announce(ctx, name, "failed", reason=reason)
    release(ctx, name, reason)


def release(ctx, name, reason, delete_instance=True):
    """Delete instance, Slurm node and key of ``name`` (each step may fail); free its name and address.

    Released by another process meanwhile (expand's deadline and the join
    handler failing it at once) is the end state wanted: no error then.
    """
    node = ctx.registry.get(name)
    if node is None:
        return
    try:
        # only a node that got as far as Slurm leaves it (a failed create never did)
        remove(ctx, node, reason, instance=delete_instance, slurm="dynamic" if node.state in LEAVING else None,
               strict=())
    except RegistryError:
        if ctx.registry.get(name) is not None:
            raise


def quietly(func, *args, expected=None):
    """``func(*args)`` whose failure is logged, not raised (clean-up goes on); ``expected`` words are not even logged."""
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - clean-up must go on
        if expected and expected in str(exc).lower():
            return
        log.warning("clean-up step %s%r failed: %s", getattr(func, "__name__", func), args, exc)
