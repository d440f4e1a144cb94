"""What a libvirt save gives back: the QEMU process's memory, read from /proc (vcluster.providers.libvirt_memory).

The process is a real one of this machine, started with a QEMU-like command
line (``qemu-...`` as its first word, ``-uuid <uuid>``); the domain is a
stand-in carrying the two calls the module makes of a libvirt domain.
"""

import subprocess
import sys
import uuid

import pytest

from vcluster.providers import libvirt_memory as lm


class Domain:
    """The part of a libvirt domain the module reads: its UUID, libvirt's rss statistic, whether it runs."""

    def __init__(self, uid, rss_kib=None, active=True):
        self.uid, self.rss_kib, self.active = uid, rss_kib, active

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self.uid

    def memoryStats(self):  # noqa: N802 - libvirt's name
        return {} if self.rss_kib is None else {"rss": self.rss_kib}

    def isActive(self):  # noqa: N802 - libvirt's name
        return self.active


@pytest.fixture
def fake_qemu():
    """A process whose command line looks like QEMU's: ``qemu-system-x86_64 ... -uuid <uuid>``; (proc, uuid)."""
    uid = str(uuid.uuid4())
    code = "import sys; b = bytearray(64 << 20); print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(["qemu-system-x86_64", "-c", code, "-uuid", uid], executable=sys.executable,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"  # its memory touched
        yield proc, uid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("uri", "local"), [
    ("qemu:///system", True),
    ("qemu+unix:///system?socket=/var/lib/vcluster/hv2/run/libvirt-sock", True),
    ("qemu+ssh://root@hv2/system", False),
    ("qemu+tcp://192.0.2.7/system", False),
])
def test_only_a_uri_without_host_is_this_machine(uri, local):
    assert lm.on_this_machine(uri) is local


def test_smaps_rollup_is_parsed_from_this_process():
    with open("/proc/self/smaps_rollup") as fh:
        got = lm.parse_smaps_rollup(fh.read())
    assert got["rss_kib"] >= got["pss_kib"] > 0
    assert lm.parse_smaps_rollup("Rss:  10 kB\nPss: x kB\n") == {"rss_kib": 10}


def test_the_qemu_process_is_found_by_its_uuid(fake_qemu):
    proc, uid = fake_qemu
    assert lm.qemu_pid(uid.upper()) == proc.pid
    assert lm.qemu_pid(str(uuid.uuid4())) is None
    assert lm.qemu_pid(uid, proc="/nonexistent") is None


def test_a_local_save_frees_the_processs_pss_once_it_is_gone(fake_qemu):
    proc, uid = fake_qemu
    dom = Domain(uid, rss_kib=1)
    held = lm.held_before_save("qemu:///system", dom)
    assert held["source"] == "smaps_rollup" and held["pid"] == proc.pid
    assert held["rss_mib"] >= held["pss_mib"] >= 64  # the 64 MiB it touched at least
    assert lm.freed_after_save(held, dom) is None  # still running: nothing freed
    proc.kill()
    proc.wait()
    assert lm.freed_after_save(held, dom) == held["pss_mib"]


def test_a_remote_hypervisor_reports_libvirts_rss_once_the_domain_is_inactive():
    dom = Domain(str(uuid.uuid4()), rss_kib=600 * 1024)
    held = lm.held_before_save("qemu+ssh://root@hv2/system", dom)
    assert held == {"source": "libvirt", "pid": None, "rss_mib": 600, "pss_mib": None}
    assert lm.freed_after_save(held, dom) is None
    dom.active = False
    assert lm.freed_after_save(held, dom) == 600
    assert lm.held_before_save("qemu+ssh://root@hv2/system", Domain("x")) is None  # no statistic: no figure
    assert lm.freed_after_save(None, dom) is None


def test_a_local_domain_whose_process_is_not_found_falls_back_to_libvirts_rss():
    dom = Domain(str(uuid.uuid4()), rss_kib=300 * 1024)
    assert lm.held_before_save("qemu:///system", dom)["source"] == "libvirt"
