"""API calls and seconds per expand against the local Nova testbed, vcluster vs. a naive baseline.

    python bench/openstack_api.py [--sizes 1,10,50] [--poll 0.5] [--boot-bytes 2300] [--keep]

For every N it creates N servers twice in the same run, on the same testbed:

- ``vcluster``: ``OpenStackProvider.create`` (Nova multi-create per batch, one
  list call per poll round, rename + per-node metadata once ACTIVE);
- ``baseline``: what a script without batching does: one ``POST /servers`` per
  node (final name and metadata at once), then every poll round one
  ``GET /servers/{id}`` per server still building.

Both poll at the same interval and wait until every server is ACTIVE. The
servers are deleted (not timed) before the next measurement. Each node gets
``--boot-bytes`` of incompressible boot files, like a minion key pair and
config, so user-data chunking shows (Nova's 64 KiB user-data limit).

Starts the testbed (scripts/openstack-testbed/up.sh) when it is not READY and
stops it at the end unless ``--keep``. Prints one JSON document.
"""

import argparse
import base64
import collections
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vcluster.providers.base import BootFile, InstanceSpec  # noqa: E402
from vcluster.providers.openstack import OpenStackProvider, spec_metadata, tag_cluster  # noqa: E402

TB = pathlib.Path(os.environ.get("VCLUSTER_TESTBED_DIR", "/var/lib/vcluster/openstack-testbed"))
SCRIPTS = REPO / "scripts" / "openstack-testbed"


def specs(n, cluster, boot_bytes):
    out = []
    for i in range(n):
        name = f"b{cluster[-4:]}{i:03d}"
        files = [BootFile("/etc/salt/minion.d/vcluster.conf", f"id: {name}\nmaster: 10.77.0.1\n")]
        if boot_bytes:
            files.append(BootFile("/etc/salt/pki/minion/minion.pem", base64.b64encode(os.urandom(boot_bytes * 3 // 4)).decode(), 0o400))
        out.append(
            InstanceSpec(
                name=name, address=None, image="vcluster-node", cpus=1, memory_mb=64, flavor="m1.tiny",
                boot_files=files, tags={"cluster": cluster, "node": name, "profile": "bench", "registry_id": str(i)},
            )
        )
    return out


def baseline(prov, batch, poll):
    """One create per node, then one GET per building server per round."""
    calls = collections.Counter()
    compute = prov.conn.compute
    image = prov._image_id("vcluster-node")
    flavor = prov._flavor_id(batch[0])
    from vcluster.providers.openstack import cloud_config

    started = time.monotonic()
    ids = []
    for spec in batch:
        calls["create"] += 1
        server = compute.create_server(
            name=spec.name, image_id=image, flavor_id=flavor, networks="none", metadata=spec_metadata(spec),
            tags=["vcluster", tag_cluster(spec.tags["cluster"])],
            user_data=base64.b64encode(cloud_config(spec).encode()).decode(),
        )
        ids.append(server.id)
    pending = set(ids)
    rounds = 0
    deadline = started + 600
    while pending:
        rounds += 1
        for sid in list(pending):
            calls["get"] += 1
            server = compute.get_server(sid)
            if server.status == "ERROR":
                raise RuntimeError(f"baseline server {server.name} went to ERROR")
            if server.status == "ACTIVE" and not server.task_state:
                pending.discard(sid)
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError("baseline servers not ACTIVE within 600 s")
            time.sleep(poll)
    return time.monotonic() - started, calls, rounds, ids


def measure(prov, n, poll, boot_bytes, label):
    cluster = f"bench-{label}-{os.urandom(2).hex()}"
    batch = specs(n, cluster, boot_bytes)
    prov._image_id("vcluster-node")
    prov._flavor_id(batch[0])  # lookups are cached per provider: keep them out of both measurements
    if label == "vcluster":
        prov.calls.clear()
        started = time.monotonic()
        created = prov.create(batch)
        seconds = time.monotonic() - started
        calls = dict(prov.calls)
        ids = [i.id for i in created]
        rounds = calls.get("list", 0)
    else:
        seconds, calls, rounds, ids = baseline(prov, batch, poll)
        calls = dict(calls)
    prov.delete(ids)
    return {
        "seconds": round(seconds, 2),
        "calls": calls,
        "total_calls": sum(v for k, v in calls.items() if k != "retry"),
        "poll_rounds": rounds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--boot-bytes", type=int, default=2300)
    parser.add_argument("--keep", action="store_true", help="leave a testbed this script started running")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    started_here = False
    startup = None
    if not (TB / "READY").exists():
        t = time.monotonic()
        started_here = True
        if subprocess.run(["bash", str(SCRIPTS / "up.sh")], stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["bash", str(SCRIPTS / "down.sh")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            raise SystemExit(f"the testbed did not start; see {TB}/log")
        startup = round(time.monotonic() - t, 1)
    prov = OpenStackProvider(
        "bench",
        {"cloud": "vcluster-testbed", "clouds_yaml": str(TB / "clouds.yaml"), "networks": "none",
         "poll_interval": args.poll, "boot_timeout": 600, "action_timeout": 300},
    )
    results = []
    try:
        for n in sizes:
            row = {"n": n}
            # baseline first for odd N, vcluster first for even N: spreads warm-up effects
            order = ("baseline", "vcluster") if n % 2 else ("vcluster", "baseline")
            for label in order:
                row[label] = measure(prov, n, args.poll, args.boot_bytes, label)
            row["speedup"] = round(row["baseline"]["seconds"] / max(row["vcluster"]["seconds"], 1e-9), 2)
            row["call_ratio"] = round(row["baseline"]["total_calls"] / max(row["vcluster"]["total_calls"], 1), 2)
            results.append(row)
            print(f"N={n}: vcluster {row['vcluster']['seconds']} s / {row['vcluster']['total_calls']} calls, "
                  f"baseline {row['baseline']['seconds']} s / {row['baseline']['total_calls']} calls", file=sys.stderr)
    finally:
        prov.close()
        if started_here and not args.keep:
            subprocess.run(["bash", str(SCRIPTS / "down.sh")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = os.getloadavg()
    print(json.dumps({
        "benchmark": "openstack_api",
        "testbed": {"dir": str(TB), "compute_hosts": 2, "virt_driver": "fake", "startup_seconds": startup},
        "poll_interval": args.poll,
        "boot_bytes_per_node": args.boot_bytes,
        "load_average_after": [round(x, 2) for x in load],
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
