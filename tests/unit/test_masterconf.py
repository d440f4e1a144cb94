"""vcluster.masterconf adds to a site's master configuration and never replaces it.

Every test writes a real site configuration (a master file, master.d files,
include files) into a temporary directory and reads it back with Salt's own
``salt.config.master_config``: what salt-master would run with.
"""

import os

import pytest
import salt.config
import yaml

from vcluster import loader, masterconf
from vcluster.masterconf import Refused

CTL = "ctl1"


def site_master(tmp_path, **settings):
    """A site's /etc/salt/master (and its master.d) under ``tmp_path``."""
    etc = tmp_path / "etc"
    (etc / "master.d").mkdir(parents=True, exist_ok=True)
    master = etc / "master"
    master.write_text(yaml.safe_dump(settings) if settings else "")
    return master


def site_settings(tmp_path):
    """A site with roots, a reactor, an engine, nodegroups and an ext_pillar of its own."""
    srv = tmp_path / "srv"
    for sub in ("salt", "pillar", "reactor"):
        (srv / sub).mkdir(parents=True, exist_ok=True)
    return {
        "file_roots": {"base": [str(srv / "salt")], "dev": [str(srv / "dev")]},
        "pillar_roots": {"base": [str(srv / "pillar")]},
        "reactor": [{"site/deploy/*": [str(srv / "reactor" / "deploy.sls")]}],
        "engines": [{"webhook": {"port": 8080}}],
        "nodegroups": {"web": "L@web1,web2"},
        "ext_pillar": [{"cmd_yaml": "cat /etc/site-pillar.yaml"}],
        "worker_threads": 7,
    }


def plan(master, target=None, **kw):
    kw.setdefault("site", "/etc/vcluster/pillar")
    kw.setdefault("registry", "/var/lib/vcluster/registry.sqlite")
    kw.setdefault("controller", CTL)
    target = target or os.path.join(os.path.dirname(master), "master.d", "vcluster.conf")
    return masterconf.plan(str(master), str(target), **kw)


def salt_reads(master):
    """The options salt-master starts with."""
    return salt.config.master_config(str(master))


def test_on_an_empty_master_the_file_is_vclusters_settings_as_they_are(tmp_path):
    master = tmp_path / "etc" / "master"  # no such file: a fresh machine
    master.parent.mkdir()
    p = plan(master, interface="10.77.0.1", master_id="h_master")
    want = masterconf.master_config(None, "/etc/vcluster/pillar", "/var/lib/vcluster/registry.sqlite",
                                    "10.77.0.1", "h_master", CTL, ["vnode*"])
    assert p.content == want == p.added
    assert p.unions == [] and p.notes == []
    # the integration stack's call: the same code with an empty site
    assert masterconf.addition({}, want) == (want, want, [])
    p.write()
    opts = salt_reads(master)
    assert opts["id"] == "h_master" and opts["interface"] == "10.77.0.1"
    assert opts["file_roots"]["base"] == [loader.data_dir("salt")]
    assert opts["nodegroups"] == {"vcluster_cluster": f"L@{CTL} or vnode*", "vcluster_policy": f"L@h_master,{CTL}"}
    assert opts["engines"] == [{"vcluster_tasks": {}}]
    assert opts["auto_accept"] is False and opts["presence_events"] is True


def test_a_naive_drop_in_replaces_the_sites_keys(tmp_path):
    """Why the union: Salt takes a key from one file (the issue's finding, on Salt itself)."""
    settings = site_settings(tmp_path)
    master = site_master(tmp_path, **settings)
    naive = masterconf.master_config(None, "/s", "/r.sqlite", None, "m", CTL, ["vnode*"])
    (master.parent / "master.d" / "naive.conf").write_text(yaml.safe_dump(naive))
    opts = salt_reads(master)
    assert settings["file_roots"]["base"][0] not in opts["file_roots"]["base"]
    assert "web" not in opts["nodegroups"]
    assert {"webhook": {"port": 8080}} not in opts["engines"]


def test_the_written_file_holds_the_sites_entries_plus_vclusters(tmp_path):
    settings = site_settings(tmp_path)
    master = site_master(tmp_path, **settings)
    p = plan(master)
    # what vcluster adds: its own entries only
    assert p.added["file_roots"] == {"base": [loader.data_dir("salt")]}
    assert p.added["engines"] == [{"vcluster_tasks": {}}]
    assert p.added["nodegroups"] == {"vcluster_cluster": f"L@{CTL} or vnode*",
                                     "vcluster_policy": f"L@{p.before['id']},{CTL}"}
    assert "worker_threads" not in p.content and "interface" not in p.content and "id" not in p.content
    assert sorted(p.unions) == sorted(["file_roots", "pillar_roots", "reactor", "engines", "nodegroups",
                                       "ext_pillar"])
    assert "holds the site's entries plus vcluster's" in p.notes[0] and str(master) in p.notes[0]
    # the file carries the union, the site's entries first
    assert p.content["file_roots"] == {"base": settings["file_roots"]["base"] + [loader.data_dir("salt")],
                                       "dev": settings["file_roots"]["dev"]}
    assert p.content["reactor"][0] == settings["reactor"][0] and len(p.content["reactor"]) == 4
    p.write()
    written = (master.parent / "master.d" / "vcluster.conf").read_text()
    assert written.startswith(masterconf.MARKER)
    opts = salt_reads(master)
    assert opts["file_roots"]["base"] == settings["file_roots"]["base"] + [loader.data_dir("salt")]
    assert opts["file_roots"]["dev"] == settings["file_roots"]["dev"]
    assert opts["pillar_roots"]["base"] == settings["pillar_roots"]["base"] + [loader.data_dir("pillar"),
                                                                               "/etc/vcluster/pillar"]
    assert opts["engines"] == [{"webhook": {"port": 8080}}, {"vcluster_tasks": {}}]
    assert opts["nodegroups"]["web"] == "L@web1,web2" and "vcluster_cluster" in opts["nodegroups"]
    assert opts["ext_pillar"][0] == {"cmd_yaml": "cat /etc/site-pillar.yaml"}
    assert opts["ext_pillar"][1] == {"vcluster": {"registry": "/var/lib/vcluster/registry.sqlite"}}
    tags = [next(iter(r)) for r in opts["reactor"]]
    assert tags == ["site/deploy/*", "salt/minion/*/start", "vcluster/slurm/power/*", "vcluster/slurm/job"]
    assert opts["worker_threads"] == 7


def test_running_it_again_reads_the_site_without_its_own_file(tmp_path):
    master = site_master(tmp_path, **site_settings(tmp_path))
    first = plan(master)
    first.write()
    again = plan(master)
    assert again.text() == first.text()
    assert again.site == first.site  # its own file is not the site's
    # the site changes its roots: the file follows
    settings = site_settings(tmp_path)
    settings["file_roots"]["base"].append("/srv/formulas")
    master.write_text(yaml.safe_dump(settings))
    third = plan(master)
    third.write()
    assert "/srv/formulas" in salt_reads(master)["file_roots"]["base"]
    assert loader.data_dir("salt") in salt_reads(master)["file_roots"]["base"]


def test_site_keys_in_master_d_are_kept_too(tmp_path):
    settings = site_settings(tmp_path)
    master = site_master(tmp_path)
    (master.parent / "master.d" / "site.conf").write_text(yaml.safe_dump(settings))
    p = plan(master)
    assert str(master.parent / "master.d" / "site.conf") in p.notes[0]
    p.write()
    opts = salt_reads(master)
    assert opts["file_roots"]["base"] == settings["file_roots"]["base"] + [loader.data_dir("salt")]
    assert opts["engines"] == [{"webhook": {"port": 8080}}, {"vcluster_tasks": {}}]


def test_empty_keys_of_the_site_are_filled(tmp_path):
    master = site_master(tmp_path)
    master.write_text("engines:\nreactor:\nnodegroups:\nfile_roots:\n  base:\n")
    p = plan(master)
    assert p.content["engines"] == [{"vcluster_tasks": {}}] and len(p.content["reactor"]) == 3
    p.write()
    opts = salt_reads(master)
    assert opts["engines"] == [{"vcluster_tasks": {}}]
    assert opts["file_roots"]["base"] == [loader.data_dir("salt")]


def test_the_masters_own_id_goes_into_the_policy_nodegroup(tmp_path):
    master = site_master(tmp_path, id="salt01_master", interface="192.0.2.10")
    p = plan(master)
    assert "id" not in p.content and "interface" not in p.content
    assert p.content["nodegroups"]["vcluster_policy"] == f"L@salt01_master,{CTL}"
    p.write()
    opts = salt_reads(master)
    assert opts["id"] == "salt01_master" and opts["interface"] == "192.0.2.10"


@pytest.mark.parametrize("settings, kw, key", [
    ({"interface": "0.0.0.0"}, {"interface": "10.77.0.1"}, "interface"),
    ({"id": "salt01_master"}, {"master_id": "vm_master"}, "id"),
    ({"nodegroups": {"vcluster_cluster": "L@other"}}, {}, "nodegroups"),
    ({"engines": [{"vcluster_tasks": {"tick": 5}}]}, {}, "engines"),
    ({"ext_pillar": [{"vcluster": {"registry": "/elsewhere.sqlite"}}]}, {}, "ext_pillar"),
    ({"auto_accept": True}, {}, "auto_accept"),
    ({"file_roots": ["/srv/salt"]}, {}, "file_roots"),
])
def test_refuses_to_replace_a_site_value_naming_the_key(tmp_path, settings, kw, key):
    master = site_master(tmp_path, **settings)
    with pytest.raises(Refused) as err:
        plan(master, **kw)
    sentence = str(err.value)
    assert sentence.startswith(f"{key}:") and str(master) in sentence
    assert "\n" not in sentence
    assert not (master.parent / "master.d" / "vcluster.conf").exists()


def test_refuses_when_an_include_file_would_override_the_union(tmp_path):
    settings = site_settings(tmp_path)
    master = site_master(tmp_path, include="extra/*.conf")
    (master.parent / "extra").mkdir()
    late = master.parent / "extra" / "roots.conf"
    late.write_text(yaml.safe_dump({"file_roots": settings["file_roots"]}))
    with pytest.raises(Refused) as err:
        plan(master)
    assert str(err.value).startswith("file_roots:") and str(late) in str(err.value)


def test_refuses_a_target_salt_does_not_read(tmp_path):
    master = site_master(tmp_path, **site_settings(tmp_path))
    with pytest.raises(Refused, match="is not read by salt-master"):
        plan(master, target=tmp_path / "etc" / "vcluster.conf")
    with pytest.raises(Refused, match="is the site's master file"):
        plan(master, target=master)


def test_never_overwrites_a_site_file_of_the_same_name(tmp_path):
    master = site_master(tmp_path)
    theirs = master.parent / "master.d" / "vcluster.conf"
    theirs.write_text("worker_threads: 3\n")
    with pytest.raises(Refused, match="was not written by vcluster.masterconf"):
        plan(master)  # --check says so already
    assert masterconf.main(["--check", str(master), "--controller", CTL, "--write", str(theirs)]) == 1
    assert theirs.read_text() == "worker_threads: 3\n"


def test_replaces_the_file_its_earlier_version_wrote(tmp_path):
    """stack.sh wrote the whole settings, unmarked, before this module added its marker."""
    master = site_master(tmp_path)
    old = master.parent / "master.d" / "vcluster.conf"
    old.write_text(yaml.safe_dump(masterconf.master_config(None, "/s", "/r.sqlite", None, "m", CTL, ["vnode*"])))
    p = plan(master)
    p.write()
    assert old.read_text().startswith(masterconf.MARKER)


def test_says_when_the_sites_top_file_hides_vclusters(tmp_path):
    settings = site_settings(tmp_path)
    (tmp_path / "srv" / "salt" / "top.sls").write_text("base: {'*': [site]}\n")
    master = site_master(tmp_path, **settings)
    p = plan(master)
    top = str(tmp_path / "srv" / "salt" / "top.sls")
    assert any(n.startswith("file_roots:base: Salt reads the top file " + top) for n in p.notes)


def test_cli_check_prints_what_it_adds_and_the_merged_result(tmp_path, capsys):
    settings = site_settings(tmp_path)
    master = site_master(tmp_path, **settings)
    assert masterconf.main(["--check", str(master), "--controller", CTL]) == 0
    out = capsys.readouterr().out
    added, merged = out.split("# merged, as salt-master reads it")
    assert "vcluster_tasks" in added and "webhook" not in added
    assert "webhook" in merged and "vcluster_tasks" in merged and "0.0.0.0" in merged  # Salt's default interface
    assert not (master.parent / "master.d" / "vcluster.conf").exists()  # --check writes nothing


def test_cli_write_and_refusal(tmp_path, capsys):
    master = site_master(tmp_path, interface="0.0.0.0")
    target = master.parent / "master.d" / "vcluster.conf"
    rc = masterconf.main(["--check", str(master), "--controller", CTL, "--interface", "10.77.0.1",
                          "--write", str(target)])
    err = capsys.readouterr().err
    assert rc == 1 and not target.exists()
    assert err == (f"vcluster.masterconf: not writing {target}: interface: the site has '0.0.0.0' "
                   f"(set in {master}), vcluster would replace it with '10.77.0.1' (leave --interface out).\n")
    rc = masterconf.main(["--check", str(master), "--controller", CTL, "--write", str(target)])
    assert rc == 0 and f"# written: {target}" in capsys.readouterr().out
    assert salt_reads(master)["engines"] == [{"vcluster_tasks": {}}]


def test_reactor_threads_a_larger_site_value_is_kept_a_smaller_one_refused(tmp_path):
    """A join holds a reactor thread for its whole length: vcluster needs at least REACTOR_THREADS."""
    master = site_master(tmp_path, reactor_worker_threads=masterconf.REACTOR_THREADS * 2)
    p = plan(master)
    assert "reactor_worker_threads" not in p.content
    p.write()
    assert salt_reads(master)["reactor_worker_threads"] == masterconf.REACTOR_THREADS * 2

    master = site_master(tmp_path / "small", reactor_worker_threads=4)
    with pytest.raises(Refused, match="reactor_worker_threads: the site has 4"):
        plan(master)

    master = site_master(tmp_path / "none")
    p = plan(master)
    p.write()
    assert salt_reads(master)["reactor_worker_threads"] == masterconf.REACTOR_THREADS


def test_the_publisher_keeps_frozen_minions_and_a_site_heartbeat_is_refused(tmp_path):
    """Salt 3008.3 drops a minion that misses ZMTP heartbeats for 30 s: every suspended node's."""
    master = site_master(tmp_path / "none")
    plan(master).write()
    read = salt_reads(master)
    assert read["zmq_heartbeat_ivl"] == 0 and read["zmq_heartbeat_timeout"] == 0

    master = site_master(tmp_path / "site", zmq_heartbeat_timeout=30000)
    with pytest.raises(Refused, match="zmq_heartbeat_timeout: the site has 30000"):
        plan(master)
