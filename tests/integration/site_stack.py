"""A site that is not vcluster's, joined by vcluster as docs/quickstart.md says.

:class:`SiteStack` is :class:`~tests.integration.stack.ClusterStack` with
three differences:

* the master's configuration is the *site's* (:func:`write_site`): its own
  ``file_roots`` and ``pillar_roots`` (each with a ``top.sls`` holding its
  own targets and vcluster's, as quickstart step 2 asks), an engine of its
  own (``site_heartbeat``, from its ``engines_dirs``) and a reactor of its
  own (tag ``site/ping``);
* vcluster's part is added by ``python -m vcluster.masterconf --check
  ... --write master.d/vcluster.conf`` run from the installed wheel, before
  the master starts (:meth:`SiteStack.before_master_start`);
* master, controller minion and every Salt CLI run with the fresh venv's
  Python that holds only the wheel (``package_venv.py``), from a factories
  manager with no code directory, no PYTHONPATH and a working directory
  outside the checkout (:func:`venv_factories`).

The site's Slurm is a slurm.conf of its own (:func:`site_slurm_conf`) with
job accounting (records in its slurmdbd, per-task usage by
``jobacct_gather/linux``, a completion log by ``jobcomp/filetxt``) and its
own ``PrologSlurmctld``, ``Include vcluster.conf`` (``slurm:manage:
include``).
"""

import os
import pathlib
import re
import shutil
import textwrap

import yaml

from tests.integration.package_venv import REPO, run
from tests.integration.stack import ClusterStack

#: Everything the site keeps on the controller host (prolog, its logs, the state's marker).
SITE_DIR = pathlib.Path("/var/lib/vcluster-site-test")
SITE_PROLOG = SITE_DIR / "prolog"
PROLOG_LOG = SITE_DIR / "prolog.log"
JOBCOMP_LOG = SITE_DIR / "jobcomp.log"
REACTOR_LOG = SITE_DIR / "reactor.log"
#: The site pillar key its state writes into the marker file.
SITE_PILLAR = {"site_motd": "site pillar still read"}
POOL_GLOB = "tnode*"

ENGINE = '''\
"""The site's own master engine: counts its ticks into a file."""
import os
import time


def start(path, interval=1):
    count = 0
    while True:
        count += 1
        with open(path + ".tmp", "w") as out:
            out.write(f"{count}\\n")
        os.replace(path + ".tmp", path)
        time.sleep(interval)
'''


def _top(path):
    """The ``base`` targets of one of vcluster's top files (its Jinja comment left out)."""
    text = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
    return yaml.safe_load(text)["base"]


def write_site(root, controller):
    """The site's own trees under ``root``; also its engine's file and node_exporter's textfile directory."""
    states, pillar, engines, reactor = (root / n for n in ("site-states", "site-pillar-roots", "site-engines",
                                                              "site-reactor"))
    for path in (states / "site", pillar, engines, reactor, root / "textfile"):
        path.mkdir(parents=True, exist_ok=True)
    (states / "site" / "marker.sls").write_text(textwrap.dedent("""\
        site-marker:
          file.managed:
            - name: {dir}/state-{{{{ grains['id'] }}}}
            - makedirs: True
            - contents: {{{{ pillar['site_motd'] | yaml_dquote }}}}
        """).format(dir=SITE_DIR))
    # quickstart step 2: the site's tops come first, so they name vcluster's targets too
    top = {"base": {"*": ["site.marker"], **_top(REPO / "salt" / "top.sls")}}
    (states / "top.sls").write_text(yaml.safe_dump(top, sort_keys=False))
    (pillar / "site_common.sls").write_text(yaml.safe_dump(SITE_PILLAR))
    top = {"base": {"*": ["site_common"], **_top(REPO / "pillar" / "top.sls")}}
    (pillar / "top.sls").write_text(yaml.safe_dump(top, sort_keys=False))
    (engines / "site_heartbeat.py").write_text(ENGINE)
    (reactor / "ping.sls").write_text(textwrap.dedent(f"""\
        site-ping:
          local.cmd.run:
            - tgt: {controller}
            - arg:
              - echo {{{{ data['token'] }}}} >> {REACTOR_LOG}
        """))
    return {"states": states, "pillar": pillar, "engines": engines, "reactor": reactor,
            "heartbeat": root / "heartbeat", "metrics": root / "textfile"}


def site_master_config(trees, interface):
    """The site's own master settings (before vcluster): roots, engine, reactor, no open doors."""
    return {
        "interface": interface,
        "auto_accept": False,
        "open_mode": False,
        "file_roots": {"base": [str(trees["states"])]},
        "pillar_roots": {"base": [str(trees["pillar"])]},
        "engines_dirs": [str(trees["engines"])],
        "engines": [{"site_heartbeat": {"path": str(trees["heartbeat"]), "interval": 1}}],
        "reactor": [{"site/ping": [str(trees["reactor"] / "ping.sls")]}],
    }


def site_slurm_conf(kept, node_line, accounting=True, dbd_host=None):
    """The site's own slurm.conf: ``kept`` settings, its choices, its prolog and accounting, the Include.

    With ``dbd_host`` its accounting is stored by the slurmdbd there
    (``scripts/accounting-up.sh --slurmdbd``).
    """
    lines = ["# The site's own slurm.conf (tests/integration/site_stack.py); its formula owns it."]
    lines += [f"{k}={v}" for k, v in kept.items()]
    lines += [
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # what vcluster needs from the site's file (docs/slurm-site.md)
        "SlurmctldParameters=enable_configless",
        "MaxNodeCount=128",
        "TreeWidth=65533",
        "SlurmdTimeout=0",
        # the site's choices (this host is not booted with systemd: no cgroup plugins here)
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "ReturnToService=2",
        "MpiDefault=none",
        "MailProg=/bin/true",
    ]
    if accounting:
        # job records in slurmdbd, per-task usage, and a job completion log of its own
        storage = (["AccountingStorageType=accounting_storage/slurmdbd", f"AccountingStorageHost={dbd_host}"]
                   if dbd_host else ["AccountingStorageType=accounting_storage/none"])
        lines += storage + ["JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=30",
                            "JobCompType=jobcomp/filetxt", f"JobCompLoc={JOBCOMP_LOG}"]
    else:
        lines += ["AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
                  "JobCompType=jobcomp/none"]
    lines += [f"PrologSlurmctld={SITE_PROLOG}", node_line, "Include vcluster.conf", ""]
    return "\n".join(lines)


def install_site_slurm(kept, node_line, dbd_host=None):
    """Write the site's prolog, its logs (owned by SlurmUser) and slurm.conf; the conf's bytes."""
    SITE_DIR.mkdir(mode=0o755, exist_ok=True)
    SITE_PROLOG.write_text(f'#!/bin/sh\necho "job=$SLURM_JOB_ID nodes=$SLURM_JOB_NODELIST" >> {PROLOG_LOG}\n')
    SITE_PROLOG.chmod(0o755)
    for log in (PROLOG_LOG, JOBCOMP_LOG):
        log.write_text("")
        shutil.chown(log, "slurm", "slurm")
    data = site_slurm_conf(kept, node_line, dbd_host=dbd_host).encode()
    pathlib.Path("/etc/slurm").mkdir(exist_ok=True)
    pathlib.Path("/etc/slurm/slurm.conf").write_bytes(data)
    return data


def venv_factories(salt_factories, venv, root):
    """A factories manager whose daemons and CLIs run the fresh venv's Python, outside the checkout.

    Its scripts (``/tmp/vcs/scripts``) name no code directory, its
    environment has no PYTHONPATH: vcluster comes from the wheel only.
    """
    from saltfactories.manager import FactoriesManager  # pylint: disable=import-outside-toplevel

    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return FactoriesManager(
        root_dir="/tmp/vcs", python_executable=str(venv["python"]), code_dir=None, inject_sitecustomize=False,
        cwd=root, environ=environ, log_server_host=salt_factories.log_server_host,
        log_server_port=salt_factories.log_server_port, log_server_level=salt_factories.log_server_level,
        event_listener=salt_factories.event_listener, stats_processes=salt_factories.stats_processes,
        slow_stop=salt_factories.slow_stop, start_timeout=salt_factories.start_timeout,
    )


class SiteStack(ClusterStack):
    """The site's master with vcluster added by the installed ``vcluster.masterconf``."""

    def __init__(self, factories, network, root, venv, trees):
        # the metrics file, as docs/operations.md tells a site with node_exporter
        metrics = {"path": str(trees["metrics"] / "vcluster.prom"), "interval": 10}
        super().__init__(factories, network, root, site_extra={"vcluster": {"metrics": metrics}})
        self.venv = venv
        self.trees = trees
        self.masterconf_out = None
        self.vcluster_conf = None

    def master_config(self):
        conf = site_master_config(self.trees, self.network["gateway"])
        conf["log_level_logfile"] = os.environ.get("VCLUSTER_TEST_LOG_LEVEL", "info")
        return conf

    def before_master_start(self):
        """quickstart step 2: ``--check``, then ``--write`` master.d/vcluster.conf, from the wheel."""
        conf_file = pathlib.Path(self.master.config["conf_file"])
        self.vcluster_conf = conf_file.parent / "master.d" / "vcluster.conf"
        args = ["--check", str(conf_file), "--controller", self.controller_id, "--pool-glob", POOL_GLOB,
                "--site", str(self.site), "--registry", str(self.registry)]
        cmd = [str(self.venv["python"]), "-I", "-m", "vcluster.masterconf"]
        env = {"PATH": "/usr/bin:/bin"}
        check = run(cmd + args, cwd=self.root, env=env)
        assert not self.vcluster_conf.exists()  # --check alone writes nothing
        self.vcluster_conf.parent.mkdir(exist_ok=True)
        written = run(cmd + args + ["--write", str(self.vcluster_conf)], cwd=self.root, env=env)
        self.masterconf_out = check.stdout + written.stdout
