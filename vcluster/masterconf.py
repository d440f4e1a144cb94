"""The salt-master settings vcluster needs, in one place.

``scripts/stack.sh`` writes them to ``/etc/salt/master.d/vcluster.conf``;
the integration tests hand the same dict to their master. A new reactor is
one line in :data:`REACTORS`.

CLI Example:

.. code-block:: bash

    python -m vcluster.masterconf --repo /srv/vcluster --site /etc/vcluster/pillar \\
        --registry /var/lib/vcluster/registry.sqlite --interface 10.77.0.1 \\
        --master-id vm_master --controller vm --pool-glob 'vnode*'
"""

import argparse
import pathlib
import sys

import yaml

#: event tag -> reactor SLS (relative to the checkout's ``reactor/``)
REACTORS = {
    "salt/minion/*/start": "minion_start.sls",
    "vcluster/slurm/power/*": "slurm_power.sls",
    "vcluster/slurm/job": "slurm_job.sls",
}


def master_config(repo, site, registry, interface, master_id, controller, pool_globs):
    """Master settings: state tree, pillar, reactor, ext_pillar, nodegroups."""
    repo = pathlib.Path(repo)
    cluster = " or ".join([f"L@{controller}"] + list(pool_globs))
    return {
        "id": master_id,
        "interface": interface,
        # Keys of virtual nodes are pre-accepted by expand; nothing else is
        # accepted without an admin.
        "auto_accept": False,
        "open_mode": False,
        "file_roots": {"base": [str(repo / "salt")]},
        "pillar_roots": {"base": [str(repo / "pillar"), str(site)]},
        "reactor": [{tag: [str(repo / "reactor" / sls)]} for tag, sls in REACTORS.items()],
        "ext_pillar": [{"vcluster": {"registry": str(registry)}}],
        "nodegroups": {
            "vcluster_cluster": cluster,
            "vcluster_policy": f"L@{master_id},{controller}",
        },
        "presence_events": True,
        # liveness, autoscale and reconcile: one long-lived engine process
        # (vcluster.periodic), not master schedule entries that fork and
        # reload every runner module per run. Each task reads from pillar
        # whether it is enabled and due, so intervals are policy.
        "engines": [{TASKS_ENGINE: {}}],
    }


#: The master engine that runs vcluster's periodic tasks (_engines/vcluster_tasks.py).
TASKS_ENGINE = "vcluster_tasks"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--interface", required=True)
    parser.add_argument("--master-id", required=True)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--pool-glob", action="append", required=True)
    args = parser.parse_args(argv)
    conf = master_config(args.repo, args.site, args.registry, args.interface, args.master_id,
                         args.controller, args.pool_glob)
    sys.stdout.write(yaml.safe_dump(conf, default_flow_style=False, sort_keys=False))


if __name__ == "__main__":
    main()
