"""The sections of the ``vcluster:`` pillar: every key, its checker, default and meaning.

Validation, the dataclasses of :mod:`vcluster.policy.objects` and the
reference in docs/policy.md all read these objects; each driver's options
are in its provider's option module (:mod:`vcluster.policy.provider_options`
loads them).
"""

from vcluster.policy import checks as c
from vcluster.policy.maps import FrozenMap
from vcluster.policy.schema import REQUIRED, Key, Section
from vcluster.providers import DRIVERS
from vcluster.providers.base import SUSPEND_NAMES

MEMBERSHIPS = ("dynamic", "static", "cloud")
#: What ``suspend:mode`` and ``preemption:mode`` accept: the suspend modes of
#: :data:`vcluster.providers.base.SUSPEND_MODES` that keep a node's jobs, and the
#: old name ``suspend`` (:data:`~vcluster.providers.base.SUSPEND_ALIASES`; the
#: node's provider resolves it). ``shelve`` is for idle nodes only: never a
#: default, asked for by name.
SUSPEND_MODES = tuple(n for n in SUSPEND_NAMES if n != "shelve")
DEFAULT_REGISTRY = "/var/lib/vcluster/registry.sqlite"

LIMITS = Section(
    "vcluster:limits",
    "Safety limits, checked before any instance is created.",
    Key("max_nodes", c.positive_int, None, "all virtual nodes of the cluster at once, `failed` ones included "
        "until released, nodes of profiles no longer in the policy included",
        shown_default="number of names in all pools"),
    Key("max_per_request", c.positive_int, 16, "largest `count` of one `vcluster.expand`"),
)

RECONCILE = Section(
    "vcluster:reconcile",
    "How often and how patiently `vcluster.reconcile` repairs (see [reconcile.md](reconcile.md)).",
    Key("interval", c.non_negative_number, 300, "seconds between scheduled runs; 0 turns the schedule off"),
    Key("grace", c.positive_number, 600, "seconds before an interrupted transition counts as stuck"),
    Key("apply", c.boolean, True, "scheduled runs repair (`false`: report only)"),
)

FAULTS = Section(
    "vcluster:faults",
    "Retries of provider calls and the pause of a profile that keeps failing.",
    Key("create_attempts", c.positive_int, 3, "provider create tries per expand"),
    Key("create_backoff", c.non_negative_number, 2.0, "seconds before the 2nd try, doubled after each"),
    Key("create_deadline", c.positive_number, 600, "seconds for all tries together"),
    Key("failures", c.non_negative_int, 3, "failed expand requests of one profile within `window` pause "
        "the profile (0: never)"),
    Key("window", c.positive_number, 600, "seconds in which `failures` failed expands count"),
    Key("pause", c.non_negative_number, 900, "seconds a paused profile's expands are refused"),
)

POWER_SAVE = Section(
    "vcluster:power_save",
    "Slurm power saving of cloud-membership nodes (slurm.conf `Suspend*`/`Resume*`).",
    Key("suspend_time", c.positive_int, 600, "`SuspendTime`: seconds idle before `SuspendProgram`"),
    Key("suspend_timeout", c.positive_int, 120, "`SuspendTimeout`: seconds the suspend may take"),
    Key("resume_timeout", c.positive_int, 600, "`ResumeTimeout`: seconds to resume, then `ResumeFailProgram`; "
        "must exceed the `join_timeout` of every cloud profile without its own `resume_timeout`"),
    Key("resume_rate", c.non_negative_int, 0, "`ResumeRate`, nodes per minute (0: no limit)"),
    Key("suspend_rate", c.non_negative_int, 0, "`SuspendRate`, nodes per minute (0: no limit)"),
    Key("exclude_nodes", c.hostnames, (), "`SuspendExcNodes` besides the bare-metal nodes"),
    Key("exclude_partitions", c.partition_list, (), "`SuspendExcParts`"),
)

AUTOSCALE_PROFILE = Section(
    "vcluster:autoscale:profiles:<profile>",
    "Autoscaling bounds of one profile; keys must name profiles of `vcluster:profiles`.",
    Key("min_nodes", c.non_negative_int, 0, "nodes kept ready (dynamic/static) even when idle; 0 for a cloud "
        "profile (Slurm's power saving decides which names run)"),
    Key("max_nodes", c.positive_int, None, "most nodes autoscaling keeps; at most the profile's limit",
        shown_default="the profile's `max_nodes`, else `limits:max_nodes`"),
    Key("idle_time", c.positive_int, 600, "seconds a node may idle before it is retired"),
    Key("warm_pool", c.non_negative_int, 0, "nodes kept suspended (provider suspend) for a fast resume; "
        "`min_nodes` + `warm_pool` ≤ `max_nodes`"),
    Key("per_job", c.boolean, False, "jobs flagged with `autoscale:job_flag` get their own nodes here"),
)

AUTOSCALE = Section(
    "vcluster:autoscale",
    "The `vcluster.autoscale` runner and its periodic run (the `vcluster_tasks` engine).",
    Key("enabled", c.boolean, False, "`false`: no periodic run; the runner only reports"),
    Key("interval", c.positive_int, 60, "seconds between scheduled runs"),
    Key("job_flag", c.flag_word, "vcluster-own", "`sbatch --comment=<flag>[:<profile>]` asks for own nodes"),
    Key("profiles", None, FrozenMap(), "autoscaling bounds per profile", kind="mapping profile → bounds",
        section=AUTOSCALE_PROFILE, named=True),
)

LIVENESS = Section(
    "vcluster:liveness",
    "How vcluster, not slurmctld, decides that a node is dead (see [operations.md](operations.md)).",
    Key("enabled", c.boolean, True, "`false`: the scheduled check only reports"),
    Key("timeout", c.positive_number, 30, "seconds a flagged node's minion may take to answer the closer look"),
    Key("baremetal", c.boolean, True, "also watch Slurm nodes that are minions but not vcluster nodes"),
    Key("resume", c.boolean, True, "undo vcluster's own DOWN once the node's slurmd answers again"),
)

SUSPEND = Section(
    "vcluster:suspend",
    "Defaults of `vcluster.suspend` / `vcluster.resume`.",
    Key("mode", c.choice(SUSPEND_MODES), "suspend", "`freeze` (containers), `pause` (VMs; RAM kept), `save` "
        "(VMs; RAM to disk) or `suspend`: `save`, or `freeze` where the provider cannot save; see "
        "[Suspend modes](#suspend-modes)"),
    Key("resume_timeout", c.positive_number, 120, "seconds after the provider resume for the node's slurmd "
        "to answer the controller (else the node goes back to suspended) and then for its minion (else "
        "it is reported silent)"),
)

METRICS = Section(
    "vcluster:metrics",
    "vcluster's Prometheus metrics as a file that the master's `vcluster_tasks` engine keeps fresh, for "
    "node_exporter's textfile collector (see [operations.md](operations.md#metrics-prometheus)).",
    Key("path", c.prom_path, None, "file the engine replaces atomically (mode 0644); its directory must exist "
        "on the master, e.g. node_exporter's `--collector.textfile.directory`; a missing directory is logged, "
        "one sentence per write", shown_default="none: no file"),
    Key("interval", c.positive_number, 60, "seconds between writes; the engine looks every 10 s, so shorter "
        "intervals write every 10 s"),
)

PREEMPTION = Section(
    "vcluster:preemption",
    "Jobs of some partitions suspend the virtual nodes on their hypervisor host.",
    Key("enabled", c.boolean, False, "turn preemption on (needs `partitions` and `preemptible`)"),
    Key("partitions", c.partition_list, (), "jobs in these Slurm partitions preempt"),
    Key("preemptible", c.partition_list, (), "virtual nodes whose profile partition is listed here may be "
        "suspended; each must be some profile's partition, none may also preempt"),
    Key("mode", c.choice(SUSPEND_MODES), "suspend", "how preempted nodes are suspended, as `suspend:mode`"),
    Key("migrate", c.boolean, False, "on job end, move to a free host first when the provider can"),
    Key("hypervisors", c.hypervisors, FrozenMap(), "Slurm node name → provider host name (default: same "
        "name)"),
)

POOL = Section(
    "vcluster:pools:<name>",
    "Node names and IPv4 addresses. A new node gets the **first free name** in hostlist order and the "
    "**lowest free address**, independently; a name or address is free when no node outside state "
    "`released` holds it. Names and addresses may not be shared between pools.",
    Key("names", None, REQUIRED, "e.g. `vnode[001-064]`, expanded with python-hostlist (zero padding kept); "
        "each name is hostname, minion id and Slurm NodeName: lowercase letters, digits, `-`, ≤ 63 "
        "characters, not all digits, no name twice in any pool", kind=c.hostnames.kind),
    Key("addresses", None, None, "IPv4 only; network, broadcast and gateway addresses are never handed "
        "out; at least as many usable addresses as names, all inside one `/prefix` network, at most 65536; "
        "leave out to let the provider assign addresses",
        kind="`a.b.c.d-a.b.c.e`, CIDR `a.b.c.d/n`, one address, or a list of those"),
    Key("prefix", c.prefix, None, "netmask length of the nodes' static network configuration",
        shown_default="the CIDR's own length, else `24`"),
    Key("gateway", c.ipv4, None, "default route; must lie inside the pool's network"),
)

PROFILE = Section(
    "vcluster:profiles:<name>",
    "What one kind of virtual node looks like and where it comes from.",
    Key("provider", c.name, None, "provider of its instances, defined in `providers`",
        shown_default="the only provider, if one"),
    Key("pool", c.name, None, "pool of its names and addresses, defined in `pools`",
        shown_default="the only pool, if one"),
    Key("image", c.string, REQUIRED, "LXD alias, Glance or OpenNebula image"),
    Key("cpus", c.positive_int, 1, "instance size and Slurm `CPUs=`"),
    Key("memory", c.positive_int, 1024, "instance size (MiB) and Slurm `RealMemory=`"),
    Key("flavor", c.string, None, "OpenStack flavor; **required** with an openstack provider"),
    Key("network", c.string, None, "network the instance joins", shown_default="the provider's `network`"),
    Key("features", c.features, ("virtual",), "Slurm `Feature=`; no operators, no repeats"),
    Key("partition", c.slurm_word, None, "Slurm partition the node joins"),
    Key("join_timeout", c.positive_number, 300, "seconds from create to idle in Slurm; later the node is "
        "`failed` and cleaned up"),
    Key("sync_modules", c.boolean, False, "the node's highstate syncs `_modules`, `_states`, ... from "
        "file_roots first (Salt's `autoload_dynamic_modules`, about 1.5 s per join); vcluster's node states "
        "need none"),
    Key("salt_mine", c.boolean, False, "the node's minion runs Salt's mine (`mine.update` at start and every "
        "`mine_interval`); vcluster's states read no mine data"),
    Key("max_nodes", c.positive_int, None, "nodes of this profile at once (besides `limits:max_nodes`)"),
    Key("membership", c.choice(MEMBERSHIPS), None, "how its nodes join Slurm",
        shown_default="the cluster's `membership`"),
    Key("resume_timeout", c.positive_int, None, "cloud membership only: `ResumeTimeout` of its partition; "
        "must exceed `join_timeout`", shown_default="`power_save:resume_timeout`"),
    Key("extra", c.mapping, None, "passed to the provider as `InstanceSpec.extra`; keys per driver below",
        shown_default="`{}`"),
)

PROVIDER_COMMON = Section(
    "vcluster:providers:<name>",
    "Where instances are created: a `driver` and the driver's options (below). Credential keys "
    "(`password`, `token`, `key`, `secret`, `auth`, `session`, `trust_password` and anything ending in "
    "`_password`, `_token`, `_secret`, `_key`) are passed to the provider but shown as `<hidden>` in every "
    "repr, log line and runner return; prefer credential files readable by the master only.",
    Key("driver", c.choice(tuple(DRIVERS)), REQUIRED, "which provider module creates the instances",
        shown_default="**required**, except for a provider named after a driver (`lxd:` → `lxd`)"),
)

TOP = Section(
    "vcluster",
    "The top level of the policy. Names of pools, providers and profiles: letters, digits, `.`, `-`, `_`.",
    Key("cluster", c.slug, REQUIRED, "tag on every instance; `reconcile` only touches instances with this "
        "tag: give each master that shares a cloud its own"),
    Key("controller", c.minion_id, REQUIRED, "minion of the slurmctld host; the runner reaches Slurm through "
        "it"),
    Key("master", c.host_or_address, REQUIRED, "what new minions connect to; must not be a pool address"),
    Key("registry", c.abs_path, DEFAULT_REGISTRY, "SQLite registry on the master"),
    Key("membership", c.choice(MEMBERSHIPS), "dynamic", "how nodes join Slurm (see [Membership modes](#membership-modes)); "
        "profiles may override"),
    Key("limits", None, {}, "safety limits", section=LIMITS),
    Key("reconcile", None, {}, "repair runs", section=RECONCILE),
    Key("faults", None, {}, "provider retries and profile pauses", section=FAULTS),
    Key("power_save", None, {}, "Slurm power saving of cloud nodes", section=POWER_SAVE),
    Key("autoscale", None, {}, "the autoscaler", section=AUTOSCALE),
    Key("liveness", None, {}, "dead node detection", section=LIVENESS),
    Key("suspend", None, {}, "suspend/resume defaults", section=SUSPEND),
    Key("preemption", None, {}, "preemption by bare-metal jobs", section=PREEMPTION),
    Key("metrics", None, {}, "the metrics file", section=METRICS),
    Key("pools", None, REQUIRED, "names and addresses; non-empty", kind="mapping name → pool",
        section=POOL, named=True),
    Key("providers", None, REQUIRED, "where instances are created; non-empty", kind="mapping name → provider",
        section=PROVIDER_COMMON, named=True),
    Key("profiles", None, REQUIRED, "kinds of virtual node; non-empty", kind="mapping name → profile",
        section=PROFILE, named=True),
)
