"""Migrate: move a virtual node to another hypervisor host, jobs and all.

A ``ready`` node goes ``migrating -> ready``, a ``suspended`` one
``migrating -> suspended`` (resume moves a suspended node first when asked
for a host: :mod:`vcluster.suspend_resume`). The node keeps its name; the
registry's host (and address, should the provider change it) and Slurm's
NodeAddr follow.
"""

from vcluster import lifecycle
from vcluster.arguments import flag, node_names
from vcluster.errors import InvalidTransition, PolicyError, VclusterError, sentence
from vcluster.slurm import instance as _instance


def migrate(ctx, node, host=None, live=True, test=False):
    """Move ``node`` to hypervisor ``host`` (or the provider's choice), jobs and all.

    The node keeps its name; registry ``host`` (and ``address``, should the
    provider change it) follow, and Slurm gets the new NodeAddr. A ``ready``
    node goes ``migrating -> ready``, a ``suspended`` one ``migrating ->
    suspended``. Providers that cannot move the instance say so and
    nothing changes. Where the provider measures the move (libvirt's
    ``last_migration``: ``seconds``, ``downtime_s``, ``memory_mib``, ...)
    the return has it under ``migration``. ``test=True`` validates and says what would be done.
    """
    names = node_names(node, what="node")
    if len(names) != 1:
        raise PolicyError(f"node must name one node, got {node!r}")
    name = names[0]
    if host is not None and (not isinstance(host, str) or not host.strip()):
        raise PolicyError(f"host must be a hypervisor name, got {host!r}")
    live = flag(live, "live")
    test = flag(test, "test")
    found = lifecycle.held(ctx, [name], ("ready", "suspended"), "migrated")[name]
    if not found.instance_id:
        raise PolicyError(f"node {name} has no instance to migrate")
    if host and host == found.host:
        raise PolicyError(f"host must differ from the node's current host, got {host!r}")
    back = found.state
    target = host or "a host the provider chooses"
    if test:
        return {"result": None, "test": True, "node": name, "state": back,
                "comment": (f"would move {name} ({back}, instance {found.instance_id}) from "
                            f"{found.host or 'its current host'} to {target} (live={live}); the registry and "
                            f"Slurm's NodeAddr would follow and it would stay {back}")}
    ctx.events.progress(f"migrating {name} from {found.host} to {target}", node=name)
    lifecycle.move(ctx, name, "migrating", expect=back, event={"source": found.host, "target": host})
    provider = ctx.provider(found.provider)
    try:
        inst = provider.migrate(found.instance_id, host=host, live=live)
    except Exception as exc:
        lifecycle.move(ctx, name, back, expect="migrating", event={"reason": "migration failed"})
        raise VclusterError(f"cannot migrate {name}: {sentence(exc)}") from exc  # noqa: SLF001
    fields = {}
    if inst.host and inst.host != found.host:
        fields["host"] = inst.host
    address_changed = bool(inst.address and found.address and inst.address != found.address)
    if address_changed:
        fields["address"] = inst.address
    if fields:
        ctx.registry.update(name, **fields)
    if address_changed:
        ctx.slurm.update_node_addr(name, inst.address)
    _instance.record(ctx, name, drained=back == "suspended")  # Slurm's cloud accounting (23.11+); never raises
    moved = {"migrated": True, "source": found.host, "host": inst.host, "address": inst.address}
    try:
        lifecycle.move(ctx, name, back, expect="migrating", event=moved)
    except InvalidTransition:
        lifecycle.announce(ctx, name, back, **moved)
    ctx.events.progress(f"{name} moved to {inst.host}", node=name, host=inst.host)
    ret = {"result": True, "comment": f"{name} moved from {found.host} to {inst.host}",
           "node": name, "state": back, "host": inst.host, "address": inst.address}
    stats = getattr(provider, "last_migration", None)
    if isinstance(stats, dict):
        ret["migration"] = dict(stats)  # what the provider measured (libvirt: seconds, downtime_s, memory_mib, ...)
    return ret
