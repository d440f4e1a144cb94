"""What a libvirt save gives back to the hypervisor: the memory the QEMU process held.

A managed save ends the guest's QEMU process; the memory it held is what
the host gets back. That is measured on the process, right before the
save, not as the host's ``MemAvailable`` before and after: on a busy host
(a second guest booting, a Slurm job starting, the page cache moving)
``MemAvailable`` moves by hundreds of MiB for reasons of its own (a 512 MiB
guest's save measured 284 MiB one run and 677 MiB the next, bench/libvirt_save.py).

* A hypervisor on this machine (a URI without a host part, ``qemu:///system``
  or ``qemu+unix:///system?socket=...``): the QEMU process is found by the
  domain's UUID on its command line (``-uuid <uuid>``, which libvirt always
  passes) and its ``/proc/<pid>/smaps_rollup`` read: ``Pss`` (its own pages,
  plus its share of pages mapped by other processes too, such as the QEMU
  binary and libraries of the other guests) is reported as freed; ``Rss``
  alongside. The freed figure counts only once the process is gone.
* A remote hypervisor: libvirt's ``rss`` memory statistic of the domain
  (libvirt reads the QEMU process's resident set on the hypervisor),
  counted once the domain is no longer active.
"""

import os
import urllib.parse

#: ``/proc/<pid>/smaps_rollup`` fields (kB) this module reads
ROLLUP_FIELDS = {"Rss:": "rss_kib", "Pss:": "pss_kib"}


def on_this_machine(uri):
    """Is the libvirt ``uri`` one of this machine's daemons (no host part: the local socket)?"""
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme in ("qemu", "qemu+unix") and not parsed.netloc


def parse_smaps_rollup(text):
    """``{"rss_kib", "pss_kib"}`` of a ``/proc/<pid>/smaps_rollup`` text (missing fields left out)."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ROLLUP_FIELDS and words[1].isdigit():
            out[ROLLUP_FIELDS[words[0]]] = int(words[1])
    return out


def qemu_pid(uuid, proc="/proc"):
    """The pid of the QEMU process running the domain of ``uuid`` on this machine, or None.

    Matches ``-uuid <uuid>`` on the command line of a process whose first
    word names a ``qemu`` binary.
    """
    wanted = uuid.lower().encode()
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if not argv or b"qemu" not in os.path.basename(argv[0]):
            continue
        for flag, value in zip(argv, argv[1:], strict=False):
            if flag == b"-uuid" and value.lower() == wanted:
                return int(entry)
    return None


def process_memory(pid, proc="/proc"):
    """``{"pid", "rss_mib", "pss_mib"}`` of process ``pid`` (smaps_rollup), or None when it cannot be read."""
    try:
        with open(os.path.join(proc, str(pid), "smaps_rollup")) as fh:
            got = parse_smaps_rollup(fh.read())
    except OSError:
        return None
    if "pss_kib" not in got:
        return None
    return {"pid": int(pid), "rss_mib": got.get("rss_kib", 0) // 1024, "pss_mib": got["pss_kib"] // 1024}


def held_before_save(uri, dom, proc="/proc"):
    """What the QEMU process of ``dom`` holds now: ``{"source", "pid", "rss_mib", "pss_mib"}``, or None.

    ``source`` is ``smaps_rollup`` (this machine's process, ``pid`` set)
    or ``libvirt`` (the domain's ``rss`` statistic, ``pid`` and
    ``pss_mib`` None).
    """
    if on_this_machine(uri):
        try:
            pid = qemu_pid(dom.UUIDString(), proc)
        except Exception:  # noqa: BLE001 - a measurement, never a reason to fail the save
            pid = None
        got = process_memory(pid, proc) if pid is not None else None
        if got is not None:
            return {"source": "smaps_rollup", **got}
    try:
        rss = dom.memoryStats().get("rss")
    except Exception:  # noqa: BLE001 - as above
        rss = None
    if rss is None:
        return None
    return {"source": "libvirt", "pid": None, "rss_mib": int(rss) // 1024, "pss_mib": None}


def freed_after_save(held, dom, proc="/proc"):
    """MiB the save gave back: the process's PSS (else RSS) once it is gone; None when it still runs or unknown."""
    if held is None:
        return None
    if held["pid"] is not None:
        gone = not os.path.exists(os.path.join(proc, str(held["pid"])))
    else:
        try:
            gone = not dom.isActive()
        except Exception:  # noqa: BLE001 - as above
            gone = False
    if not gone:
        return None
    return held["pss_mib"] if held["pss_mib"] is not None else held["rss_mib"]
