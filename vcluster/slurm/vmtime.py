"""VM time per job: ``sacct`` joined with ``sacctmgr show instance`` by node and time.

Slurm keeps jobs (``sacct``) and cloud instances (``sacctmgr show
instance``, 23.11+, see :mod:`vcluster.slurm.instance`) apart; this joins
them. For every job and every node it ran on, each instance of that node
that overlaps the job's run is one row, with the seconds of overlap::

    sacct -anP -X -S 2026-12-01 -E now -o JobID,NodeList,Start,End > jobs.txt
    sacctmgr -nP show instance start=2026-12-01 end=now \\
        format=NodeName,InstanceId,InstanceType,Extra,Start,End > instances.txt
    python3 -m vcluster.slurm.vmtime jobs.txt instances.txt

prints ``JobID|NodeName|InstanceId|InstanceType|Extra|Seconds`` lines, then
one ``JobID|total|...|Seconds`` line per job. A VM that ran two jobs at once
counts in both: this is the VM time each job was on, not a split of it.
``End`` ``Unknown`` (still running) counts up to now; jobs that never started
(``Start`` ``Unknown`` or ``None``) are left out.
"""

import collections
import datetime
import sys

from vcluster.errors import SlurmError
from vcluster.slurm import hostlist

_OPEN = ("Unknown", "None", "")


def _time(text, now, what):
    if text in _OPEN:
        return now
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        raise SlurmError(f"{what} {text!r} is not a time such as 2026-12-07T04:43:04") from None


def _rows(text, width, what):
    rows = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != width:
            raise SlurmError(f"{what} line {line[:80]!r} does not have {width} |-separated fields "
                             "(use the format= of vcluster.slurm.vmtime's docstring)")
        rows.append(fields)
    return rows


def job_vm_seconds(sacct_text, instances_text, now=None):
    """Rows ``(job, node, instance_id, instance_type, extra, seconds)`` of the join; see the module doc.

    ``sacct_text``: ``sacct -nP -X -o JobID,NodeList,Start,End`` output;
    ``instances_text``: ``sacctmgr -nP show instance
    format=NodeName,InstanceId,InstanceType,Extra,Start,End`` output.
    """
    now = datetime.datetime.now().timestamp() if now is None else now
    by_node = collections.defaultdict(list)
    for node, iid, itype, extra, start, end in _rows(instances_text, 6, "sacctmgr show instance"):
        by_node[node].append((iid, itype, extra, _time(start, now, "instance Start"), _time(end, now, "instance End")))
    out = []
    for job, nodes, start, end in _rows(sacct_text, 4, "sacct"):
        if start in _OPEN or nodes in ("", "None assigned"):
            continue
        j_start, j_end = _time(start, now, f"job {job} Start"), _time(end, now, f"job {job} End")
        for node in hostlist.expand(nodes):
            for iid, itype, extra, i_start, i_end in by_node.get(node, ()):
                seconds = min(j_end, i_end) - max(j_start, i_start)
                if seconds > 0:
                    out.append((job, node, iid, itype, extra, int(seconds)))
    return out


def report(sacct_text, instances_text, now=None):
    """The printed form: one line per row, then ``JOB|total|||| SECONDS`` per job, in job order."""
    rows = job_vm_seconds(sacct_text, instances_text, now)
    totals = collections.OrderedDict()
    lines = []
    for row in rows:
        lines.append("|".join(str(f) for f in row))
        totals[row[0]] = totals.get(row[0], 0) + row[5]
    lines += [f"{job}|total||||{seconds}" for job, seconds in totals.items()]
    return "\n".join(lines) + ("\n" if lines else "")


def main(argv=None):
    """``python3 -m vcluster.slurm.vmtime SACCT_FILE INSTANCES_FILE`` (``-`` for standard input)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python3 -m vcluster.slurm.vmtime SACCT_FILE INSTANCES_FILE\n")
        return 2

    def read(path):
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as fh:
            return fh.read()

    try:
        sys.stdout.write(report(read(argv[0]), read(argv[1])))
    except (OSError, SlurmError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
