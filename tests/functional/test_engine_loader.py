"""The master engine ``vcluster_tasks`` through Salt's own engine loader.

It must be found on a master through the ``salt.loader`` entry point (no
sync, no ``engines_dirs``), and refuse to load on a minion, where it would
have neither the master's pillar nor its keys.
"""

import copy

import salt.config
import salt.loader

from vcluster import periodic


def _engines(tmp_path, defaults, role):
    opts = copy.deepcopy(defaults)
    opts.update({"__role": role, "cachedir": str(tmp_path / "cache"), "extension_modules": str(tmp_path / "ext"),
                 "id": f"test-{role}", "conf_file": str(tmp_path / role)})
    return salt.loader.engines(opts, {}, {}, {})


def test_master_loads_vcluster_tasks_from_the_entry_point(tmp_path):
    engines = _engines(tmp_path, salt.config.DEFAULT_MASTER_OPTS, "master")
    assert "vcluster_tasks.start" in engines
    # the module Salt loaded is the repo's, and runs the library's task list
    assert engines["vcluster_tasks.start"].__module__.endswith("vcluster_tasks")
    assert [t.name for t in periodic.TASKS] == ["liveness", "autoscale", "reconcile", "metrics"]


def test_a_minion_refuses_it_with_a_reason(tmp_path):
    engines = _engines(tmp_path, salt.config.DEFAULT_MINION_OPTS, "minion")
    assert "vcluster_tasks.start" not in engines
    assert "master engine" in engines.missing_fun_string("vcluster_tasks.start")
    # the controller minion's own engine still loads there
    assert "vcluster_slurm_events.start" in engines
