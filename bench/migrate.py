#!/usr/bin/env python3
"""Benchmark: live migration of a libvirt VM node between two hypervisors, with a process at work in it.

For each guest size (MiB), one at a time: create a node with a libvirt
provider of two hypervisors (this machine's libvirtd and a second one from
``scripts/libvirt-second-host.sh``), wait for its boot, start in the guest
(through the guest agent) a *job*: a process that writes ``--fill`` of
the guest's RAM and then keeps rewriting it at ``--dirty-mib`` MiB/s, and
a counter appending a line every 0.1 s. Then move it hv1 -> hv2 live, back
non-live (``live=False``: paused for the whole copy, the baseline) and
report, as JSON, for each move:

* ``seconds``: the provider's migrate call; ``time_s``, ``downtime_s``,
  ``memory_mib``, ``iterations``: libvirt's statistics of the completed
  migration job (``downtime`` is what the guest stood still);
* ``counter_unbroken``: the counter's lines are 1..N after both moves and
  its process still runs; ``job_alive``: the memory writer still runs.

This is a process in the guest, not a Slurm job: the Slurm side of a
migration is nothing (same name, same NodeAddr), which test_provider_libvirt
and docs/libvirt.md show. Needs root, libvirtd (scripts/libvirt-up.sh),
the VM image (image-vm/build.sh) and the network ``--network`` on the first
daemon; the node, the second daemon's network and the second daemon are
removed at the end (the second daemon only if this script started it).

usage: bench/migrate.py [--sizes 512,1024] [--fill 0.5] [--dirty-mib 8] [--network vcl-virt] [--pool vcl-virt]
"""

import argparse
import base64
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import libvirt  # noqa: E402
from libvirt_save import AGENT_TIMEOUT, agent, boot_guest, guest_exec, guest_run  # noqa: E402

from vcluster.providers.libvirt import LibvirtProvider  # noqa: E402

SECOND = os.path.join(REPO, "scripts", "libvirt-second-host.sh")
COUNTER = "/var/tmp/vcl-bench-counter"


def sh(dom, script):
    """Run a shell line in the guest through the agent; its exit code."""
    return guest_run(dom, ["/bin/sh", "-c", script], time.monotonic() + 60)


def sh_out(dom, script):
    """Run a shell line in the guest through the agent; its standard output."""
    status = guest_exec(dom, ["/bin/sh", "-c", script], time.monotonic() + 60)
    return base64.b64decode(status.get("out-data") or "").decode()


@contextlib.contextmanager
def second_hypervisor(network):
    """The second libvirtd with a network of ``network``'s name bridged onto its bridge; yields its URI."""
    started = subprocess.run([SECOND, "uri"], capture_output=True, text=True, check=True).stdout.strip()
    was_up = subprocess.run(["virsh", "-c", started, "version"], capture_output=True, check=False).returncode == 0
    uri = subprocess.run([SECOND, "up"], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    conn = libvirt.open(uri)
    first = libvirt.open("qemu:///system")
    try:
        bridge = ET.fromstring(first.networkLookupByName(network).XMLDesc(0)).find("bridge").get("name")
        with contextlib.suppress(libvirt.libvirtError):
            old = conn.networkLookupByName(network)
            if old.isActive():
                old.destroy()
            old.undefine()
        net = conn.networkDefineXML(f"<network><name>{network}</name><forward mode='bridge'/>"
                                    f"<bridge name='{bridge}'/></network>")
        net.create()
        try:
            yield uri
        finally:
            net.destroy()
            net.undefine()
    finally:
        conn.close()
        first.close()
        if not was_up:
            subprocess.run([SECOND, "down"], capture_output=True, check=False)


def measure(prov, size, fill, dirty_mib, address):
    name = f"vcl-virt-migbench{size}"
    inst, dom, booted = boot_guest(prov, name, size, address)
    try:
        nbytes = int(size * fill) * 2**20
        job = (f"import os, time\nopen('/run/job.pid', 'w').write(str(os.getpid()))\n"
               f"b = bytearray(b'\\x01') * {nbytes}\nopen('/run/filled', 'w').close()\n"
               f"step, i = {dirty_mib} * 2**20 // 10, 0\n"
               "while True:\n"
               "    for k in range(i, i + step, 4096): b[k % len(b)] = (b[k % len(b)] + 1) % 256\n"
               "    i = (i + step) % len(b)\n    time.sleep(0.1)\n")
        agent(dom, "guest-exec", {"path": "/usr/bin/python3", "arg": ["-c", job]})  # runs on, not awaited
        loop = f"i=0; while :; do i=$((i+1)); echo $i >> {COUNTER}; sleep 0.1; done"
        sh(dom, f"rm -f {COUNTER}; setsid sh -c '{loop}' </dev/null >/dev/null 2>&1 & echo $! > /run/counter.pid")
        deadline = time.monotonic() + AGENT_TIMEOUT
        while sh(dom, "test -e /run/filled") != 0:
            if time.monotonic() >= deadline:
                raise TimeoutError("the guest's job did not write its memory")
            time.sleep(1)
        moves = []
        here = inst.host
        for live in (True, False):
            moved = prov.migrate(name, live=live)
            moves.append({"from": here, "to": moved.host, **prov.last_migration})
            here = moved.host
        dom = prov.conn_to(prov._key(here)).lookupByName(name)  # noqa: SLF001
        lines = [int(x) for x in sh_out(dom, f"cat {COUNTER}").split()]
        return {
            "guest_mib": size, "written_mib": nbytes // 2**20, "dirty_mib_s": dirty_mib,
            "boot_s": round(booted, 1), "moves": moves,
            "counter_lines": len(lines), "counter_unbroken": lines == list(range(1, len(lines) + 1)),
            "counter_alive": sh(dom, "kill -0 $(cat /run/counter.pid)") == 0,
            "job_alive": sh(dom, "kill -0 $(cat /run/job.pid)") == 0,
        }
    finally:
        prov.delete([name])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--fill", type=float, default=0.5)
    parser.add_argument("--dirty-mib", type=int, default=8, help="MiB/s the job rewrites")
    parser.add_argument("--network", default="vcl-virt")
    parser.add_argument("--pool", default="vcl-virt")
    parser.add_argument("--address", default="10.81.0.51")
    args = parser.parse_args()
    with second_hypervisor(args.network) as uri2:
        prov = LibvirtProvider("bench", {
            "hosts": {"hv1": {"uri": "qemu:///system", "migration_address": "127.0.0.1"},
                      "hv2": {"uri": uri2, "migration_address": "127.0.0.1"}},
            "network": args.network, "storage_pool": args.pool, "shared_storage": True})
        try:
            rows = [measure(prov, int(size), args.fill, args.dirty_mib, args.address)
                    for size in args.sizes.split(",")]
            print(json.dumps({"machine": {"cores": os.cpu_count(), "kernel": platform.release()},
                              "domain_type": prov.domain_type, "date": time.strftime("%Y-%m-%d"),
                              "rows": rows}, indent=1))
        finally:
            prov.close()


if __name__ == "__main__":
    main()
