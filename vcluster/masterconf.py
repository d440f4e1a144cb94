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
        # vcluster.reconcile on the master's schedule: the runner looks every
        # tick whether vcluster:reconcile:interval (pillar) has passed, so the
        # interval is policy, not master config (docs/reconcile.md).
        "schedule": {RECONCILE_JOB: reconcile_schedule(), LIVENESS_JOB: liveness_schedule(),
                     AUTOSCALE_JOB: autoscale_schedule()},
    }


#: Name of the master schedule entry that runs autoscale.
AUTOSCALE_JOB = "vcluster-autoscale"


def autoscale_schedule(tick=10):
    """The schedule entry: ``vcluster.autoscale scheduled=True`` every ``tick`` seconds.

    The runner itself checks ``vcluster:autoscale:enabled`` and ``interval``
    (pillar), so turning autoscaling on or off needs no master restart.
    """
    return {
        "function": "vcluster.autoscale",
        "kwargs": {"scheduled": True},
        "seconds": tick,
        "maxrunning": 1,
        "run_on_start": False,
    }


#: Name of the master schedule entry that runs reconcile.
RECONCILE_JOB = "vcluster-reconcile"


def reconcile_schedule(tick=60):
    """The schedule entry: ``vcluster.reconcile scheduled=True`` every ``tick`` seconds."""
    return {
        "function": "vcluster.reconcile",
        "kwargs": {"scheduled": True},
        "seconds": tick,
        "maxrunning": 1,
        "run_on_start": False,
    }


#: Name of the master schedule entry that checks node liveness, and its period.
#: A dead node is set DOWN within LIVENESS_INTERVAL + vcluster:liveness:timeout
#: seconds (see vcluster/liveness.py, docs/operations.md).
LIVENESS_JOB = "vcluster-liveness"
LIVENESS_INTERVAL = 10


def liveness_schedule(tick=LIVENESS_INTERVAL):
    """The schedule entry: ``vcluster.liveness`` every ``tick`` seconds, one at a time."""
    return {
        "function": "vcluster.liveness",
        "seconds": tick,
        "maxrunning": 1,
        "run_on_start": False,
    }


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
