#!/usr/bin/env python3
"""Benchmark: libvirt save (managed save) and restore of VM nodes whose memory is in use.

For each guest size (MiB), one at a time: create a node with the libvirt
provider, wait for its guest agent, fill ``--fill`` of its RAM from inside
the guest (a process holding a written buffer, started through the agent),
then ``pause``/``resume`` and ``save``/``resume`` it and report, as JSON:

* ``pause_s``, ``save_s``, ``restore_s``: the libvirt calls' own times as
  the provider reports them (``restore_s``: QEMU running again from the
  save image);
* ``resume_s``: the whole provider resume after the save: the restore and
  the guest clock stepped through the agent (the reset of the minion's
  connections comes after, from the runner, once the jobs run; the bench's
  guests run no minion);
* ``qemu_rss_mib``: the QEMU process's resident memory before the save;
* ``freed_mib``: what the provider reports: the memory the QEMU process
  held right before the save (its PSS from ``/proc/<pid>/smaps_rollup``,
  vcluster.providers.libvirt_memory), counted once the process is gone;
  ``freed_of_guest``: that over the guest's RAM; ``freed_source``: where
  it was read (``smaps_rollup``, or ``libvirt`` for a remote hypervisor's
  RSS statistic);
* ``available_delta_mib``: host ``MemAvailable`` after the save minus
  before (the provider's second figure, which moves with everything else
  the host does), and ``available_of_guest``: that over the guest's RAM;
* ``clock_offset_before_s``/``clock_offset_after_s``: guest minus host
  clock at the restore, before and after the step;
* ``domain_type``: ``kvm`` or ``qemu`` (TCG).

Needs root, libvirtd (scripts/libvirt-up.sh) and the VM image
(image-vm/build.sh). The nodes are deleted at the end.

usage: bench/libvirt_save.py [--sizes 512,1024,2048] [--fill 0.8] [--network vcl-virt] [--pool vcl-virt]
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import libvirt  # noqa: E402
import libvirt_qemu  # noqa: E402

from vcluster.providers.base import InstanceSpec  # noqa: E402
from vcluster.providers.libvirt import LibvirtProvider  # noqa: E402

AGENT_TIMEOUT = 300


def agent(dom, command, arguments=None):
    doc = {"execute": command}
    if arguments is not None:
        doc["arguments"] = arguments
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(doc), 10, 0))["return"]


def wait_agent(dom, deadline):
    while True:
        try:
            return agent(dom, "guest-ping")
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


def guest_exec(dom, argv, deadline):
    """Run argv in the guest and wait for it; the agent's last ``guest-exec-status`` (``exitcode``, ``out-data``)."""
    pid = agent(dom, "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})["pid"]
    while True:
        status = agent(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{argv} still running in the guest")
        time.sleep(0.2)


def guest_run(dom, argv, deadline):
    """Run argv in the guest and wait for it; returns its exit code (None: the agent went away)."""
    try:
        return guest_exec(dom, argv, deadline).get("exitcode")
    except libvirt.libvirtError as exc:  # the agent restarted (still booting)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{argv}: the guest agent did not answer: {exc}") from exc
        return None


def qemu_rss_mib(name):
    pid = int(open(f"/run/libvirt/qemu/{name}.pid").read())
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmRSS:"))


def boot_guest(prov, name, size, address):
    """Create bench node ``name`` (``size`` MiB, a leftover of that name deleted first) and wait for its boot.

    Returns ``(instance, domain, seconds from the create call to the end of the guest's boot)``.
    """
    spec = InstanceSpec(name=name, address=address, image="vcluster-node", cpus=1, memory_mb=size,
                        boot_files=[], tags={"cluster": "vcl-virt-bench", "node": name, "profile": "bench",
                                             "registry_id": "0"})
    prov.delete([name])
    start = time.monotonic()
    [inst] = prov.create([spec])
    try:
        dom = prov.conn_to(prov._key(inst.host)).lookupByName(name)  # noqa: SLF001 - the instance's hypervisor
        wait_agent(dom, time.monotonic() + AGENT_TIMEOUT)
        # the agent starts early in boot: wait for the boot to end before loading the guest
        deadline = time.monotonic() + AGENT_TIMEOUT
        while guest_run(dom, ["/bin/systemctl", "is-system-running", "--wait"], deadline) not in (0, 1):
            time.sleep(1)
    except BaseException:
        prov.delete([name])
        raise
    return inst, dom, time.monotonic() - start


def measure(prov, size, fill, address):
    name = f"vcl-virt-bench{size}"
    _inst, dom, booted = boot_guest(prov, name, size, address)
    try:
        nbytes = int(size * fill) * 2**20
        # a background holder of a written buffer; /run/filled once it is written
        script = (f"import time; b = bytearray(b'\\x01') * {nbytes}; open('/run/filled', 'w').close(); "
                  "time.sleep(10**7)")
        agent(dom, "guest-exec", {"path": "/usr/bin/python3", "arg": ["-c", script]})
        deadline = time.monotonic() + AGENT_TIMEOUT
        while guest_run(dom, ["/usr/bin/test", "-e", "/run/filled"], deadline) != 0:
            time.sleep(1)
        rss = qemu_rss_mib(name)
        paused = prov.suspend(name, "pause")
        prov.resume(name)
        saved = prov.suspend(name, "save")
        start = time.monotonic()
        restored = prov.resume(name)
        resumed = time.monotonic() - start
        alive = guest_run(dom, ["/usr/bin/test", "-e", "/run/filled"], time.monotonic() + 60) == 0
        return {
            "guest_mib": size, "filled_mib": nbytes // 2**20, "boot_to_agent_s": round(booted, 1),
            "qemu_rss_mib": rss, "pause_s": paused["seconds"], "save_s": saved["seconds"],
            "restore_s": restored["seconds"], "resume_s": round(resumed, 2),
            "freed_mib": saved["freed_mib"],
            "freed_of_guest": round(saved["freed_mib"] / size, 2) if saved["freed_mib"] is not None else None,
            "freed_source": (saved.get("process_mib") or {}).get("source"),
            "qemu_pss_mib": (saved.get("process_mib") or {}).get("pss_mib"),
            "available_delta_mib": saved["available_delta_mib"],
            "available_of_guest": round(saved["available_delta_mib"] / size, 2),
            "clock_offset_before_s": restored["clock_offset_before"],
            "clock_offset_after_s": restored["clock_offset_after"], "guest_alive_after": alive,
        }
    finally:
        prov.delete([name])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--fill", type=float, default=0.6)
    parser.add_argument("--network", default="vcl-virt")
    parser.add_argument("--pool", default="vcl-virt")
    parser.add_argument("--address", default="10.81.0.50")
    args = parser.parse_args()
    prov = LibvirtProvider("bench", {"network": args.network, "storage_pool": args.pool})
    rows = [measure(prov, int(size), args.fill, args.address) for size in args.sizes.split(",")]
    print(json.dumps({"machine": {"cores": os.cpu_count(), "kernel": platform.release()},
                      "domain_type": prov.domain_type, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    prov.close()


if __name__ == "__main__":
    main()
