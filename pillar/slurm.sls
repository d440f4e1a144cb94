# Slurm settings of the cluster (example for the local stack). Read by the
# slurm formula (salt/slurm); defaults in salt/slurm/defaults.yaml.
# Site facts (slurm:controller, slurm:nodes) come from the site pillar
# /etc/vcluster/pillar/site.sls, see top.sls.
slurm:
  # dynamic | static | cloud; keep equal to vcluster:membership (policy).
  membership: dynamic

  # The Slurm release the states write for is read on each host (slurmctld
  # -V, slurmd -V, scontrol --version, else the package about to be
  # installed). Pin it where hosts run different releases or nothing is
  # installed yet (docs/slurm-versions.md):
  # version: "24.11"
  # On 23.11+ (slurmd.service Type=notify) a node's highstate waits this
  # many seconds for its slurmd to reach the controller. Default: 60.
  # slurmd_start_timeout: 60

  # Partitions: each one is a NodeSet by feature, so virtual nodes join by
  # their profile's features (vcluster:profiles:<p>:features) and bare-metal
  # nodes by theirs (slurm:nodes:<n>:features, default [baremetal]).
  partitions:
    batch:
      feature: baremetal
      default: true
      options:
        MaxTime: INFINITE
        State: UP
    htc:
      feature: htc
      options:
        MaxTime: INFINITE
        State: UP

  config:
    ClusterName: vcluster
    # Room for the virtual pools (vcluster:limits:max_nodes) plus bare metal.
    MaxNodeCount: 128
    # vcluster suspends virtual nodes with their jobs (LXD freeze, Nova
    # suspend). Slurm would mark a frozen node DOWN after SlurmdTimeout and
    # requeue its job; so slurmctld's own check is off (0) and vcluster owns
    # node liveness: vcluster.liveness, run every 10 s by the master's
    # vcluster_tasks engine, sets nodes
    # DOWN whose slurmd no longer answers, skipping the ones it suspended
    # (pillar vcluster:liveness, docs/operations.md).
    SlurmdTimeout: 0
    ReturnToService: 2

  # Site mode: keep the site's own slurm.conf (and the formula that writes
  # it). vcluster then writes only /etc/slurm/vcluster.conf, which the
  # site's slurm.conf names with `Include vcluster.conf` after its own
  # settings, and checks the settings it needs there (SlurmdTimeout=0,
  # enable_configless, MaxNodeCount, TreeWidth, ...: docs/slurm-site.md).
  # Its hooks run the site's own PrologSlurmctld / jobcomp script first.
  # manage: include      # default: full (this formula writes all of slurm.conf)
  # nodes: {}            # the site's slurm.conf declares its bare-metal nodes
  # site:
  #   include_file: vcluster.conf   # in /etc/slurm; no directory (configless)
  #   prolog: null       # the site's PrologSlurmctld, when slurm.conf does not show it
  #   jobcomp: null      # the site's jobcomp/script program, likewise

  # Example bare-metal nodes (the site pillar sets the real ones):
  # nodes:
  #   node01: {address: 10.0.0.11, cpus: 32, memory: 190000}
  #   gpu01: {address: 10.0.0.21, cpus: 64, memory: 500000,
  #           features: [baremetal, gpu], options: {Gres: 'gpu:4'}}
