"""What vcluster adds to a salt-master's configuration, and never what it replaces.

vcluster needs a few master settings: its state tree and pillar in the
roots, three reactors, its ext_pillar, two nodegroups, the ``vcluster_tasks``
engine, presence events, no ``auto_accept`` and at least
:data:`REACTOR_THREADS` reactor threads (a site's larger value is kept). A site that already runs a
master has its own roots, reactors, engines and nodegroups. Salt reads
``/etc/salt/master``, then the ``default_include`` files (``master.d/*.conf``,
merged among themselves list by list), then ``include`` files; each stage
*replaces* the keys the one before set. A ``master.d/vcluster.conf`` holding
only vcluster's ``file_roots`` would therefore drop the site's.

This module reads the site's configuration the way ``salt-master`` does
(:func:`vcluster.saltconf.read`), computes the file that adds vcluster's
settings (for a list or dict key the site already sets: the site's entries
plus vcluster's), checks on Salt's own merge that the result keeps every
site entry and holds every vcluster one, and refuses, with one sentence
naming the key, what it cannot add without replacing a site value
(``interface: 0.0.0.0`` against ``--interface 10.77.0.1``, a nodegroup of
the same name, an ``include:`` file that would override the union ...).

``scripts/stack.sh`` and the integration stack use the same code on a master
of their own (no site settings: the file is vcluster's settings as they are).

CLI Example:

.. code-block:: bash

    # what the master reads now, what vcluster would add; writes nothing
    python -m vcluster.masterconf --check /etc/salt/master --controller slurmctl01
    # the same, then write the file (refused when it would replace a site value)
    python -m vcluster.masterconf --check /etc/salt/master --controller slurmctl01 \\
        --write /etc/salt/master.d/vcluster.conf
"""

import argparse
import copy
import os
import sys
import tempfile

import yaml

from vcluster import loader
from vcluster.saltconf import read

#: event tag -> reactor SLS (relative to vcluster's ``reactor/`` tree)
REACTORS = {
    "salt/minion/*/start": "minion_start.sls",
    "vcluster/slurm/power/*": "slurm_power.sls",
    "vcluster/slurm/job": "slurm_job.sls",
}

#: The master engine that runs vcluster's periodic tasks (_engines/vcluster_tasks.py).
TASKS_ENGINE = "vcluster_tasks"

#: Threads of the master's reactor for runner reactions. Every join holds
#: one for its whole length (the node's highstate and its registration in
#: Slurm, seconds), so Salt's default of 10 queued the 11th join of a burst
#: behind the first ten. Idle threads cost nothing but their stacks.
REACTOR_THREADS = 64

#: Salt 3008.3's publisher sends ZMTP heartbeats and drops a minion that
#: misses them for 30 s. A suspended node's minion is frozen with its jobs,
#: so the master dropped it after 30 s; on the thaw the minion saw the
#: disconnect and its re-authentication failed inside Salt (AsyncAuth:
#: InvalidStateError), leaving it deaf to every publish for good (seen on a
#: warm-pool node: slurmd never restarted, the node set DOWN). Without
#: heartbeats a vanished peer is reaped by TCP keepalive (Salt's
#: ``tcp_keepalive_*``), which a frozen container still answers: its kernel
#: is the host's.
KEEP_FROZEN_MINIONS = {"zmq_heartbeat_ivl": 0, "zmq_heartbeat_timeout": 0}

#: Scalar settings where vcluster needs at least its value: a site's larger
#: one is kept, a smaller one refused.
MINIMUMS = ("reactor_worker_threads",)

#: Site keys vcluster adds to and never replaces.
PROTECTED = ("file_roots", "pillar_roots", "reactor", "engines", "nodegroups", "ext_pillar", "interface", "id")

#: Keys of the form {env: [directory, ...]}.
ROOTS = ("file_roots", "pillar_roots")

#: The first line of every file this module writes.
MARKER = "# Written by python -m vcluster.masterconf"


class Refused(Exception):
    """vcluster's settings cannot be added without replacing a site setting."""


def master_config(repo, site, registry, interface, master_id, controller, pool_globs, policy_id=None):
    """vcluster's master settings (on a master with no settings of its own, the whole file).

    ``repo`` holds the ``salt``, ``reactor`` and ``pillar`` trees; ``None``
    takes them from the installed package (:func:`vcluster.loader.data_dir`).
    ``interface`` and ``master_id`` may be ``None``: the master keeps its own,
    and ``policy_id`` (that id) goes into the ``vcluster_policy`` nodegroup.
    """
    trees = {name: (os.path.join(str(repo), name) if repo else loader.data_dir(name)) for name in loader.DATA}
    cluster = " or ".join([f"L@{controller}"] + list(pool_globs))
    conf = {}
    if master_id is not None:
        conf["id"] = master_id
    if interface is not None:
        conf["interface"] = interface
    conf.update({
        # Keys of virtual nodes are pre-accepted by expand; nothing else is
        # accepted without an admin.
        "auto_accept": False,
        "open_mode": False,
        "file_roots": {"base": [trees["salt"]]},
        "pillar_roots": {"base": [trees["pillar"], str(site)]},
        "reactor": [{tag: [os.path.join(trees["reactor"], sls)]} for tag, sls in REACTORS.items()],
        "ext_pillar": [{"vcluster": {"registry": str(registry)}}],
        "nodegroups": {
            "vcluster_cluster": cluster,
            "vcluster_policy": f"L@{master_id if master_id is not None else policy_id},{controller}",
        },
        "presence_events": True,
        # No ZMTP heartbeat on the publish port (see KEEP_FROZEN_MINIONS).
        **KEEP_FROZEN_MINIONS,
        # one reactor thread per concurrent join (see REACTOR_THREADS)
        "reactor_worker_threads": REACTOR_THREADS,
        # liveness, autoscale and reconcile: one long-lived engine process
        # (vcluster.periodic), not master schedule entries that fork and
        # reload every runner module per run. Each task reads from pillar
        # whether it is enabled and due, so intervals are policy.
        "engines": [{TASKS_ENGINE: {}}],
    })
    return conf


# -- what to add ----------------------------------------------------------------------


def _where(sources, key):
    files = sources.get(key) or []
    return f" (set in {', '.join(files)})" if files else ""


def _named(entry):
    """``{name: conf}`` or ``name`` -> (name, conf) for engines and ext_pillar entries."""
    if isinstance(entry, dict) and len(entry) == 1:
        return next(iter(entry.items()))
    if isinstance(entry, str):
        return entry, None
    return None, entry


def _union_roots(key, have, want, sources):
    if not isinstance(have, dict):
        raise Refused(f"{key}: the site's {have!r}{_where(sources, key)} is not a mapping of environments to "
                      f"directories, so vcluster cannot add its own to it")
    out = copy.deepcopy(have)
    for env, dirs in want.items():
        current = out.get(env) or []
        if isinstance(current, str):
            current = [current]
        out[env] = list(current) + [d for d in dirs if d not in current]
    return out


def _union_nodegroups(have, want, sources):
    import salt.utils.data  # pylint: disable=import-outside-toplevel

    if salt.utils.data.is_dictlist(have):
        have = salt.utils.data.repack_dictlist(have)
    out = copy.deepcopy(have or {})
    for name, expr in want.items():
        if name in out and out[name] != expr:
            raise Refused(f"nodegroups: the site defines {name} as {out[name]!r}{_where(sources, 'nodegroups')}, "
                          f"vcluster needs {expr!r}")
        out[name] = expr
    return out


def _union_list(key, have, want, sources):
    if not isinstance(have, list):
        raise Refused(f"{key}: the site's {have!r}{_where(sources, key)} is not a list, so vcluster cannot add "
                      f"its entries to it")
    out = copy.deepcopy(have)
    named = {n: c for n, c in map(_named, have) if n is not None}
    for entry in want:
        if entry in out:
            continue
        name, conf = _named(entry)
        if key != "reactor" and name in named and named[name] != conf:
            raise Refused(f"{key}: the site already lists {name} with {named[name]!r}{_where(sources, key)}, "
                          f"vcluster needs {conf!r}")
        out.append(entry)
    return out


def _new(merged, have):
    """What ``merged`` holds beyond ``have``: new dict keys (recursively) and list items."""
    if isinstance(merged, dict) and isinstance(have, dict):
        out = {}
        for key, value in merged.items():
            if key not in have:
                out[key] = value
            elif value != have[key]:
                out[key] = _new(value, have[key])
        return out
    if isinstance(merged, list) and isinstance(have, list):
        return [item for item in merged if item not in have]
    return merged


def addition(site, want, sources=None):
    """The file that adds ``want`` to a site whose files set ``site``: ``(content, added, unions)``.

    A key the site does not set is vcluster's value; a list or dict key it
    sets is the site's entries plus vcluster's (``unions`` names those keys);
    a key whose site value already holds vcluster's is left out. ``added`` is
    what the master gains. Raises :class:`Refused` (naming the key) when
    vcluster's value would replace a site value.
    """
    sources = sources or {}
    content, added, unions = {}, {}, []
    for key, value in want.items():
        if site.get(key) is None:  # not set, or an empty "engines:" line
            content[key] = added[key] = value
            continue
        have = site[key]
        if key in ROOTS:
            merged = _union_roots(key, have, value, sources)
        elif key == "nodegroups":
            merged = _union_nodegroups(have, value, sources)
        elif isinstance(value, list):
            merged = _union_list(key, have, value, sources)
        elif have == value:
            continue
        elif key in MINIMUMS and isinstance(have, int) and have >= value:
            continue
        else:
            hint = {"interface": " (leave --interface out)", "id": " (leave --master-id out)"}.get(key, "")
            raise Refused(f"{key}: the site has {have!r}{_where(sources, key)}, vcluster would replace it "
                          f"with {value!r}{hint}")
        if merged == have:
            continue
        content[key] = merged
        added[key] = _new(merged, have)
        unions.append(key)
    return content, added, unions


def _reaches(key, after, value):
    """True when the master's ``after`` value of ``key`` gives vcluster what ``value`` asks."""
    if key in MINIMUMS:
        return isinstance(after, int) and after >= value
    return _holds(after, value)


def _holds(after, before):
    """True when ``after`` keeps everything of ``before`` (dict keys, list items, scalars; None is nothing)."""
    if before is None:
        return True
    if isinstance(before, dict) and isinstance(after, dict):
        return all(k in after and _holds(after[k], v) for k, v in before.items())
    if isinstance(before, list) and isinstance(after, list):
        return all(item in after for item in before)
    return after == before


def _top_notes(opts, want):
    """Salt reads one top.sls per environment: the first root that has one."""
    notes = []
    for key in ROOTS:
        for env, dirs in (want.get(key) or {}).items():
            ours = dirs[0]
            roots = (opts.get(key) or {}).get(env) or []
            first = next((d for d in roots if os.path.isfile(os.path.join(d, "top.sls"))), None)
            if first and first != ours and os.path.isfile(os.path.join(ours, "top.sls")) and ours in roots:
                notes.append(f"{key}:{env}: Salt reads the top file {os.path.join(first, 'top.sls')}, not "
                             f"vcluster's {os.path.join(ours, 'top.sls')}: add vcluster's targets to yours")
    return notes


class Plan:
    """The site as Salt reads it, the file vcluster would write, and the result.

    ``build(master_id)`` makes vcluster's settings once the master's
    effective id is known (the site's ``id``, or Salt's default).
    """

    def __init__(self, master_file, target, build):
        self.master_file = os.path.abspath(master_file)
        self.target = os.path.abspath(target)
        if self.target == self.master_file:
            raise Refused(f"{self.target} is the site's master file: vcluster writes a file of its own beside it")
        if os.path.exists(self.target) and not _ours(self.target):
            raise Refused(f"{self.target} exists and was not written by vcluster.masterconf: it is the site's file, "
                          f"choose another --write path")
        self.site, self.before, self.sources = read(self.master_file, target=self.target)
        self.want = want = build(self.before["id"])
        self.content, self.added, self.unions = addition(self.site, want, self.sources)
        self.notes = []
        if self.unions:
            files = sorted({f for k in self.unions for f in self.sources.get(k, [])})
            self.notes.append(f"{', '.join(self.unions)}: the site sets them ({', '.join(files)}) and Salt takes "
                              f"each key from one file, so {self.target} holds the site's entries plus vcluster's")
        self.after = self._check()
        self.notes += _top_notes(self.after, want)

    def text(self):
        """The file, as it is written."""
        body = yaml.safe_dump(self.content, default_flow_style=False, sort_keys=False) if self.content else "{}\n"
        return (f"{MARKER} from {self.master_file} and its includes.\n"
                "# What vcluster adds to this master; a list or dict key the site sets holds the\n"
                "# site's entries too (Salt takes each key from one file). Run the command\n"
                "# again after changing the site's own master configuration.\n" + body)

    def _check(self):
        """Read the master again with the file in place; every site and vcluster entry must hold."""
        with tempfile.TemporaryDirectory(prefix="vcluster-masterconf-") as tmp:
            candidate = os.path.join(tmp, os.path.basename(self.target))
            with open(candidate, "w", encoding="utf-8") as out:
                out.write(self.text())
            _, after, sources = read(self.master_file, target=self.target, candidate=candidate)
        if self.target not in {f for files in sources.values() for f in files} and self.content:
            raise Refused(f"{self.target} is not read by salt-master for {self.master_file} "
                          f"(not under default_include or include)")
        for key in PROTECTED:
            if key in self.site and not _holds(after.get(key), self.before.get(key)):
                raise Refused(f"{key}: writing {self.target} would replace the site's {key}{_where(self.sources, key)}")
        for key, value in self.want.items():
            if not _reaches(key, after.get(key), value):
                later = [f for f in sources.get(key, []) if f != self.target]
                where = f": {', '.join(later)} sets it after {self.target}" if later else ""
                raise Refused(f"{key}: vcluster's {key} would not reach the master{where}")
        return after

    def report(self):
        """The merged result and what vcluster adds, for a human (YAML with comments)."""
        keys = list(dict.fromkeys(list(PROTECTED) + list(self.want)))
        merged = {k: self.after.get(k) for k in keys}
        lines = [f"# master configuration: {self.master_file} and its includes",
                 f"# vcluster adds (through {self.target}):"]
        lines += ["  " + line for line in
                  (yaml.safe_dump(self.added, default_flow_style=False, sort_keys=False).splitlines()
                   if self.added else ["nothing: the site already has every setting vcluster needs"])]
        lines.append("# merged, as salt-master reads it (the keys vcluster adds to or must not replace):")
        lines += ["  " + line for line in yaml.safe_dump(merged, default_flow_style=False, sort_keys=False).splitlines()]
        lines += [f"# note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self):
        """Write the file (atomically; a site's file of that name was refused when planning)."""
        if os.path.exists(self.target) and not _ours(self.target):  # appeared since
            raise Refused(f"{self.target} exists and was not written by vcluster.masterconf: it is the site's file, "
                          f"choose another --write path")
        os.makedirs(os.path.dirname(self.target), exist_ok=True)
        tmp = f"{self.target}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(self.text())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.target)


def _ours(path):
    """Written by this module (its marker), or by its earlier version (vcluster's ext_pillar, no marker)."""
    with open(path, encoding="utf-8") as src:
        text = src.read()
    if text.startswith(MARKER):
        return True
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and any(isinstance(e, dict) and "vcluster" in e for e in data.get("ext_pillar") or [])


def plan(master_file, target, repo=None, site="/etc/vcluster/pillar", registry="/var/lib/vcluster/registry.sqlite",
         controller=None, pool_globs=("vnode*",), interface=None, master_id=None):
    """:class:`Plan` for adding vcluster to the master configured by ``master_file``."""
    if not controller:
        raise Refused("controller: the Slurm controller's minion id is required (--controller)")
    return Plan(master_file, target, lambda site_id: master_config(
        repo, site, registry, interface, master_id, controller, pool_globs, policy_id=site_id))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vcluster.masterconf", description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="MASTER", default="/etc/salt/master",
                        help="the master's configuration file (default /etc/salt/master)")
    parser.add_argument("--write", metavar="FILE", help="write vcluster's additions here "
                        "(default: only print; checked against <MASTER dir>/master.d/vcluster.conf)")
    parser.add_argument("--controller", required=True, help="the Slurm controller's minion id")
    parser.add_argument("--pool-glob", action="append", help="minion ids of virtual nodes (default 'vnode*')")
    parser.add_argument("--site", default="/etc/vcluster/pillar", help="the site pillar directory")
    parser.add_argument("--registry", default="/var/lib/vcluster/registry.sqlite")
    parser.add_argument("--interface", help="the master's listening address (default: the site's)")
    parser.add_argument("--master-id", help="the master's id (default: the site's)")
    parser.add_argument("--repo", help="a checkout holding salt/, reactor/, pillar/ (default: this package's)")
    args = parser.parse_args(argv)
    target = args.write or os.path.join(os.path.dirname(os.path.abspath(args.check)), "master.d", "vcluster.conf")
    try:
        result = plan(args.check, target, repo=args.repo, site=args.site, registry=args.registry,
                      controller=args.controller, pool_globs=args.pool_glob or ["vnode*"],
                      interface=args.interface, master_id=args.master_id)
        if args.write:
            result.write()
            # what salt-master itself now reads, not our simulation of it
            import salt.config  # pylint: disable=import-outside-toplevel

            real = salt.config.master_config(result.master_file)
            for key, value in result.want.items():
                if not _reaches(key, real.get(key), value):
                    raise Refused(f"{key}: salt-master does not read vcluster's {key} from {result.target}")
    except Refused as exc:
        sys.stderr.write(f"vcluster.masterconf: not writing {target}: {exc}.\n")
        return 1
    sys.stdout.write(result.report())
    if args.write:
        sys.stdout.write(f"# written: {result.target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
