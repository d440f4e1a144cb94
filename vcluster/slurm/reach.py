"""Is a slurmd listening? A TCP half-open (SYN) probe, run on the controller.

Why not ``connect()``: slurmd reads a Slurm message from every connection
it accepts and logs two ``error:`` lines for one that closes without a
message (measured on 22.05.8: ``slurm_receive_msg_and_forward ... Zero
Bytes were transmitted or received``, and ``Connection reset by peer`` for
an abortive close), so a probe every 10 s would fill every node's log. A
SYN never reaches slurmd: the node's kernel answers SYN-ACK for a listening
port (the connection waits in its SYN queue, below ``accept()``) or RST for
a closed one, and this host's kernel resets the half-open connection
itself, since no socket of it owns the probe's source port. Slurm's own ping
(REQUEST_PING) would need Slurm's authenticated wire protocol.

Verdicts: :data:`LISTENING` (SYN-ACK), :data:`REFUSED` (RST: the host is
up, nothing listens), :data:`SILENT` (no answer within the wait: host down,
unreachable, or filtered), :data:`UNRESOLVED` (the address has no IPv4
address). IPv4 only; needs root (a raw socket).
"""

import random
import select
import socket
import struct
import time

from vcluster.errors import SlurmError

LISTENING = "listening"
REFUSED = "refused"
SILENT = "silent"
UNRESOLVED = "unresolved"

_SYN, _RST, _ACK = 0x02, 0x04, 0x10
#: SYNs sent between two reads of the answers.
BATCH = 128
#: Receive buffer asked for the raw socket (bytes).
RECEIVE_BUFFER = 4 << 20


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _syn(src, dst, sport, dport, seq):
    """A TCP SYN segment (no options) from ``src:sport`` to ``dst:dport``."""
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, _SYN, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(head))
    return head[:16] + struct.pack("!H", _checksum(pseudo + head)) + head[18:]


def _ipv4(host):
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return infos[0][4][0] if infos else None


def _source(dst, port):
    """The local address the kernel would use towards ``dst``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((dst, port))
        return udp.getsockname()[0]


def probe(targets, wait=2.0, clock=time.monotonic):
    """``{name: verdict}`` for ``targets`` ``{name: (host, port)}``, within ``wait`` seconds.

    The SYNs go out back to back, the answers read every :data:`BATCH` SYNs
    (re-sent to the silent ones at a third and two thirds of ``wait``); the
    call returns as soon as every target answered.
    """
    out = {}
    pending = {}  # (ip, port) -> [names]
    for name, (host, port) in targets.items():
        ip = _ipv4(host)
        if ip is None:
            out[name] = UNRESOLVED
        else:
            pending.setdefault((ip, int(port)), []).append(name)
    if not pending:
        return out
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    except PermissionError:
        raise SlurmError("probing slurmd needs root on the controller (a raw socket)") from None
    reserved = {}  # source ip -> (socket holding the port, port)
    try:
        sources = {}
        for ip, port in pending:
            src = _source(ip, port)
            if src not in reserved:
                # a bound, unconnected socket keeps the port ours: nobody
                # else uses it meanwhile, and the kernel resets every
                # SYN-ACK that comes to it
                hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                hold.bind((src, 0))
                reserved[src] = (hold, hold.getsockname()[1])
            sources[(ip, port)] = src
        seq = random.getrandbits(32)
        ours = {port for _, port in reserved.values()}
        try:  # room for many answers at once (capped by net.core.rmem_max)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            pass

        # poll, not select: a master or minion process may hold more than
        # FD_SETSIZE (1024) descriptors, and select() refuses a higher one
        poller = select.poll()
        poller.register(raw, select.POLLIN)

        def receive(timeout):
            """Read answers until none is waiting (after ``timeout`` seconds at most for the first)."""
            while pending:
                if not poller.poll(max(0, int(timeout * 1000))):
                    return
                timeout = 0
                packet = raw.recv(65535)
                ihl = (packet[0] & 0x0F) * 4
                if len(packet) < ihl + 14:
                    continue
                sport, dport, _seq, ack, _off, flags = struct.unpack("!HHIIBB", packet[ihl:ihl + 14])
                if dport not in ours or not flags & _ACK or ack != (seq + 1) & 0xFFFFFFFF:
                    continue
                verdict = LISTENING if flags & _SYN else REFUSED if flags & _RST else None
                names = pending.pop((socket.inet_ntoa(packet[12:16]), sport), None) if verdict else None
                for name in names or ():
                    out[name] = verdict

        def send(keys):
            # in batches, reading answers in between: a burst of thousands of
            # answers would overflow the socket's buffer
            for i, (ip, port) in enumerate(keys):
                if (ip, port) not in pending:
                    continue
                src = sources[(ip, port)]
                try:
                    raw.sendto(_syn(src, ip, reserved[src][1], port, seq), (ip, 0))
                except OSError:
                    pass  # unreachable at once, or no buffer now: silent unless a resend answers
                if i % BATCH == BATCH - 1:
                    receive(0)

        start = clock()
        send(list(pending))
        for resend_at in (start + wait / 3, start + 2 * wait / 3, start + wait):
            while pending and clock() < resend_at:
                receive(resend_at - clock())
            if not pending or resend_at >= start + wait:
                break
            send(list(pending))
    finally:
        raw.close()
        for hold, _port in reserved.values():
            hold.close()
    for names in pending.values():
        for name in names:
            out[name] = SILENT
    return out
