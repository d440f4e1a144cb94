"""Follow an append-only spool file and wake up the moment it grows.

Used by the ``vcluster_slurm_events`` engine on the Slurm controller's
minion: slurmctld's PrologSlurmctld and jobcomp/script program append one line per job
event to a spool file (they run as SlurmUser and can reach nothing else),
and the engine must see each line at once, not at the next second of a
beacon loop.

:class:`Follower` returns the complete lines added since the last read. It
starts at the end of the file (lines written while nobody listened are old
news: the runner re-reads Slurm anyway), and starts over from the top of a
file that was replaced or truncated.

:class:`Watch` waits on Linux inotify for the spool's directory (so a
re-created file is seen too); ``wait(timeout)`` returns early when anything
in the directory changed.
"""

import ctypes
import ctypes.util
import errno
import os
import select
import struct

# inotify(7) event masks
IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class Follower:
    """The complete new lines of ``path`` on each :meth:`read`."""

    def __init__(self, path):
        self.path = path
        self.inode = None
        self.offset = 0
        self.partial = b""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        self.inode, self.offset = st.st_ino, st.st_size

    def read(self):
        """New complete lines (text, without newline) since the last call."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return []
        with fh:
            st = os.fstat(fh.fileno())
            if st.st_ino != self.inode or st.st_size < self.offset:
                # replaced or truncated: everything in it is new
                self.inode, self.offset, self.partial = st.st_ino, 0, b""
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]


class Watch:
    """inotify watch of one directory; :meth:`wait` blocks until it changes or ``timeout``."""

    def __init__(self, directory):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"cannot watch {directory}: {os.strerror(err)}")

    def wait(self, timeout):
        """True when something changed within ``timeout`` seconds (events drained)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        while True:
            try:
                if not os.read(self.fd, 64 * (_EVENT.size + 256)):
                    break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
        return True

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
