"""State runs and small probes on minions through the local client (master side)."""

import time

from vcluster.errors import VclusterError
from vcluster.saltlink.controller import _Local


class LocalActions(_Local):
    """State runs on minions through the local client."""

    def highstate(self, minion, timeout):
        ret = self._call_one_waiting(minion, "state.highstate", kwarg={"queue": True}, timeout=timeout)
        return summarize(ret, [minion])

    def apply(self, target, sls, timeout, tgt_type="glob"):
        # queue=True: concurrent joins wait for each other's run on the
        # controller instead of failing with "state.apply is running".
        ret = self._call(target, "state.apply", [sls], kwarg={"queue": True}, timeout=timeout,
                         tgt_type=tgt_type)
        return summarize(ret, [target] if tgt_type == "glob" and "*" not in target else None)

    def restart_slurmd(self, minion, timeout):
        """Kill and start ``minion``'s slurmd so it registers with slurmctld now.

        For idle nodes only (a warm-pool node coming out of a freeze): a
        slurmd thawed after a long freeze may wait minutes on RPC threads
        cut by the freeze before a clean stop, so it is killed, not stopped.
        A thawed minion may miss the first publish while it reconnects:
        asked again (15 s per try) until ``timeout`` seconds have passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            ret = self._call(minion, "cmd.run_all", [["pkill", "-KILL", "-x", "slurmd"]],
                             {"python_shell": False}, timeout=15)
            if _answered(ret, minion):
                break
            if time.monotonic() >= deadline:
                raise VclusterError(f"{minion}'s minion did not answer within {timeout:g} s after the thaw")
        left = max(15, int(deadline - time.monotonic()))
        ret = self._call(minion, "service.restart", ["slurmd"], timeout=left)
        data = (ret.get(minion) or {}).get("ret")
        if data is not True:
            raise VclusterError(f"slurmd did not start again on {minion}: {data or 'no answer'}")
        return True

    def probe(self, names, timeout):
        """``{name: seconds slurmd has run, or None (no slurmd)}`` for the minions that answer within ``timeout``.

        One ``ps -o etimes= -C slurmd`` on each minion (procps, as pgrep);
        with several slurmd processes the oldest counts (the daemon, not a
        child it forked a moment ago).
        """
        ret = self._call(list(names), "cmd.run_all", [["ps", "-o", "etimes=", "-C", "slurmd"]],
                         {"python_shell": False}, timeout=max(1, int(timeout)), tgt_type="list")
        out = {}
        for name, answer in ret.items():
            data = answer.get("ret") if isinstance(answer, dict) else answer
            if isinstance(data, dict) and "retcode" in data:
                out[name] = slurmd_age(data)
        return out

    def present(self, names):
        """Those of ``names`` whose minion holds a connection to the master's publish port.

        Salt's own ``connected_ids`` (what ``manage.present`` uses): the
        master's TCP connections matched against cached grains; no job is
        published, nothing reaches a minion.
        """
        import salt.utils.minions  # pylint: disable=import-outside-toplevel

        return set(salt.utils.minions.CkMinions(self.opts).connected_ids(subset=list(names)))


def slurmd_age(result):
    """Seconds the oldest slurmd has run, from ``ps -o etimes= -C slurmd``'s ``cmd.run_all`` result; None: none runs."""
    ages = [int(word) for word in str(result.get("stdout") or "").split() if word.isdigit()]
    if result.get("retcode") != 0 or not ages:
        return None
    return max(ages)


def _answered(ret, minion):
    """Whether ``minion`` really returned in a full_return ``LocalClient.cmd`` result.

    ``cmd`` lists every targeted minion: one that did not answer comes as
    ``False`` or as ``{"out": "no_return", "ret": "Minion did not return..."}``.
    """
    out = ret.get(minion)
    return isinstance(out, dict) and out.get("out") != "no_return" and isinstance(out.get("ret"), dict)


def summarize(ret, expected=None):
    """``(ok, one sentence)`` from a full_return state run of one or more minions."""
    if expected:
        missing = [m for m in expected if m not in ret]
        if missing:
            return False, f"{', '.join(missing)} did not return in time"
    if not ret:
        return False, "no minion returned"
    for minion, out in sorted(ret.items()):
        data = out.get("ret") if isinstance(out, dict) else out
        if isinstance(data, list):
            return False, f"{minion}: {data[0]}"
        if not isinstance(data, dict):
            return False, f"{minion}: {data}"
        failed = [(v.get("__run_num__", 0), k, v) for k, v in data.items()
                  if isinstance(v, dict) and v.get("result") is False]
        if failed:
            _, key, value = sorted(failed)[0]
            sid = key.split("_|-")[1] if "_|-" in key else key
            comment = str(value.get("comment", "")).strip().splitlines()
            return False, f"{minion}: state {sid} failed: {comment[0] if comment else 'no comment'}"
    return True, f"{len(ret)} minion(s) succeeded"
