"""Reading LXD's answers: status words, vcluster's tags, a container's address and the limits it reserves."""

import re

from vcluster.providers.base import Status

TAG_PREFIX = "user.vcluster."

#: LXD status words -> vcluster status.
STATUS_MAP = {
    "Running": Status.RUNNING,
    "Ready": Status.RUNNING,
    "Thawed": Status.RUNNING,
    "Freezing": Status.RUNNING,
    "Frozen": Status.SUSPENDED,
    "Stopped": Status.STOPPED,
    "Stopping": Status.STOPPED,
    "Aborting": Status.STOPPED,
    "Starting": Status.BUILDING,
    "Pending": Status.BUILDING,
    "Created": Status.BUILDING,
    "Started": Status.BUILDING,
    "Error": Status.ERROR,
}


def ipv4_of(data):
    """The container's global IPv4 on eth0, else the address reserved on its nic."""
    network = (data.get("state") or {}).get("network") or {}
    for addr in network.get("eth0", {}).get("addresses", []):
        if addr.get("family") == "inet" and addr.get("scope") == "global":
            return addr["address"]
    nic = (data.get("expanded_devices") or data.get("devices") or {}).get("eth0", {})
    return nic.get("ipv4.address")


def limit_cpus(value, total):
    """CPUs taken by ``limits.cpu`` ("2", "0-1", "0,2"); unset counts as none reserved."""
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    count = 0
    for part in value.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return min(count, total)


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def limit_memory_mb(value, total_mb):
    """MiB taken by ``limits.memory`` ("1024MiB", "1GB", "50%"); unset counts as none reserved."""
    if not value:
        return 0
    value = value.strip()
    if value.endswith("%"):
        return int(total_mb * float(value[:-1]) / 100)
    match = re.match(r"^([0-9.]+)\s*([a-zA-Z]*)$", value)
    if not match or match.group(2).lower() not in _UNITS:
        return 0
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()] // (1024 * 1024))
