# vcluster policy: the example for the local LXD stack.
#
# Everything vcluster may do to the cluster is decided here, in pillar, and
# validated by vcluster.policy.load() before any side effect. An invalid value
# (or a misspelt key) stops every vcluster runner with one sentence that names
# the key path and the value, for example:
#   vcluster:profiles:htc:cpus must be a positive integer, got 'two'
# The full reference is docs/policy.md.
#
# Where this file goes and who may read it:
# - Target it, in the pillar top.sls, to the Salt master's own minion and to
#   the slurmctld host only; never to compute nodes. This example holds no
#   credentials, but a cloud provider section may (see "providers" below).
# - The policy is split over two files that Salt merges under "vcluster:":
#     pillar/vcluster.sls              this file: everything site independent
#     /etc/vcluster/pillar/site.sls    written by the local stack script
#                                      (scripts/), holds only
#                                        vcluster:
#                                          controller: <minion id of slurmctld host>
#   The controller id is not written here because pillar is rendered for the
#   minion that asks for it, so a grains lookup would give the asking minion's
#   id, not the controller's. On a real site put "controller:" wherever you
#   keep site data; vcluster only needs it somewhere under "vcluster:".
#   Pillar merging must be recursive (Salt's default "smart" strategy is).

vcluster:
  # Name of this virtual cluster. Every instance vcluster creates is tagged
  # with it, and "vcluster.reconcile" only ever touches instances carrying
  # this tag: give every Salt master that shares a cloud its own name.
  # Required. Letters, digits, '-' and '_', at most 63 characters.
  cluster: demo

  # controller: the minion id of the slurmctld host. Required; comes from
  # /etc/vcluster/pillar/site.sls on the local stack (see above).

  # Address (or DNS name) that new virtual nodes' minions connect to: the
  # Salt master as seen from the virtual node network. Required. It must not
  # be one of the pool addresses below.
  master: 10.77.0.1

  # SQLite registry of names, addresses, node states, job map and audit log,
  # on the master. Default: /var/lib/vcluster/registry.sqlite
  registry: /var/lib/vcluster/registry.sqlite

  # How virtual nodes join Slurm (each profile may override it):
  #   dynamic  Slurm >= 22.05 dynamic nodes ("slurmd -Z", configless); no
  #            slurm.conf edit, no restart. Default.
  #   cloud    pool nodes pre-declared State=CLOUD in slurm.conf; Slurm's
  #            power saving asks vcluster (through Salt events) for nodes.
  #   static   NodeName lines rendered into slurm.conf, pushed to every node,
  #            slurmctld restarted and reconfigured (the classic way).
  membership: dynamic

  # Safety limits, checked before any instance is created.
  limits:
    # All virtual nodes of the cluster together, failed ones included until
    # they are released. Default: the number of names in all pools.
    max_nodes: 64
    # Largest "count" one "salt-run vcluster.expand" may ask for. Default: 16.
    max_per_request: 16

  # Pools of node names and IPv4 addresses. A new node gets the lowest free
  # name and the lowest free address of its profile's pool; a retired node
  # gives both back. Names and addresses may not be shared between pools.
  pools:
    local:
      # A Slurm hostlist (expanded like Slurm does, zero padding kept). Each
      # name becomes the node's hostname, Salt minion id and Slurm NodeName;
      # lowercase letters, digits and '-'. Required.
      names: vnode[001-064]
      # "first-last" range or a CIDR network such as 10.77.0.0/24 (a list of
      # them is accepted too). The network and broadcast addresses and the
      # gateway are never handed out. There must be at least as many usable
      # addresses as names. Optional: leave it out to let the provider
      # assign addresses (clouds without a fixed-address network).
      addresses: 10.77.0.100-10.77.0.163
      # Netmask length used in each node's static network configuration.
      # Default: the CIDR's own length, or 24 for a range.
      prefix: 24
      # Default route of the virtual nodes. Optional. Must lie in the pool's
      # network. The local stack bridge vcbr0 has no NAT, so the gateway is
      # the bridge address (the master).
      gateway: 10.77.0.1

  # Where virtual nodes are created. Each provider has a "driver" (lxd,
  # openstack, opennebula or libvirt; a provider named after a driver defaults to
  # it) and the driver's settings. Credentials (password, token, key, auth,
  # anything ending in _password/_token/_secret/_key) are accepted but never
  # shown in runner output or logs; prefer clouds.yaml (OpenStack) or a
  # credentials file (OpenNebula) readable by the master only.
  providers:
    lxd:
      driver: lxd
      # LXD managed bridge the containers attach to (10.77.0.1/24, no NAT).
      network: vcbr0
      # LXD storage pool for the containers' root disks.
      storage_pool: vcluster
      # The other lxd keys (a remote server and its client certificate, LXD
      # project and profiles, timeouts) are listed with their defaults in the
      # generated reference, docs/policy.md.
    # An OpenStack provider would look like this (its profiles need a flavor):
    # nova:
    #   driver: openstack
    #   cloud: mycloud          # entry in the master's clouds.yaml
    #   network: hpc-net
    #   region_name: RegionOne
    # A libvirt provider of two hypervisors that live-migrate between each
    # other (docs/libvirt.md; one hypervisor: `uri:` instead of `hosts:`):
    # virt:
    #   driver: libvirt
    #   network: vcl-virt       # the same name on every hypervisor
    #   storage_pool: vcl-virt  # the same name, on storage they share
    #   hosts:
    #     hv1: qemu+ssh://root@hv1/system
    #     hv2: {uri: "qemu+ssh://root@hv2/system", migration_address: 10.0.0.2}
    #   # shared_storage: true  # only for a shared pool libvirt cannot recognise
    #   #                       # (volumes then QEMU's own, never relabelled)

  # Kinds of virtual node an admin (or the autoscaler) can ask for.
  profiles:
    htc:
      # Provider and pool, by name. Default: the only one, when just one is
      # defined.
      provider: lxd
      pool: local
      # Image (LXD alias, Glance or OpenNebula image name). Required.
      image: vcluster-node
      # Size of the instance and what Slurm is told (CPUs=, RealMemory= in
      # MiB). Defaults: 1 CPU, 1024 MiB.
      cpus: 1
      memory: 1024
      # OpenStack flavor name; required for openstack providers, ignored by
      # LXD. Default: none.
      flavor: null
      # Slurm features of the node (Feature=). Default: [virtual].
      features: [virtual, htc]
      # Slurm partition the node joins. Default: none (the nodes join the
      # partitions that select them by feature or Nodes=ALL).
      partition: htc
      # Seconds from instance creation until the node must be idle in
      # Slurm; later, it is marked failed and cleaned up. Default: 300.
      join_timeout: 300
      # Sync the file server's _modules, _states, ... to the node before each
      # highstate (Salt's autoload_dynamic_modules). vcluster's states need
      # none; turn on if your states on these nodes use custom modules.
      # Default: false (saves about 1.5 s per join).
      sync_modules: false
      # Run Salt's mine (mine.update at minion start and every
      # mine_interval) on these nodes. vcluster's states read no mine data;
      # turn on if your states use it. Default: false.
      salt_mine: false
      # Most nodes of this profile at once. Default: only limits:max_nodes.
      max_nodes: 32
      # membership: dynamic    # overrides the cluster-wide mode above
      # Cloud membership only: ResumeTimeout of this profile's partition
      # (seconds; must exceed join_timeout). Default: power_save:resume_timeout.
      # resume_timeout: 400
    mem:
      provider: lxd
      pool: local
      image: vcluster-node
      cpus: 2
      memory: 2048
      features: [virtual, mem]
      partition: htc

  # The optional sections. Those marked "defaults" are shown with their
  # defaults (a unit test checks that they are, and that every block below
  # validates when uncommented); uncomment to change them.
  # Repair runs of vcluster.reconcile (docs/reconcile.md); defaults.
  # reconcile:
  #   interval: 300        # seconds between scheduled runs; 0 turns them off
  #   grace: 600           # seconds before an interrupted transition is stuck
  #   apply: true          # false: scheduled runs only report
  # Provider retries and the pause of a failing profile; defaults.
  # faults:
  #   create_attempts: 3   # provider create tries per expand
  #   create_backoff: 2.0  # seconds before the 2nd try, doubled after each
  #   create_deadline: 600 # seconds for all tries together
  #   failures: 3          # failed expands of one profile within window ...
  #   window: 600
  #   pause: 900           # ... refuse its expands this long (failures 0: never)
  # Slurm power saving of cloud-membership profiles (slurm.conf); defaults.
  # power_save:
  #   suspend_time: 600    # SuspendTime: seconds idle before the node is suspended
  #   suspend_timeout: 120 # SuspendTimeout
  #   resume_timeout: 600  # ResumeTimeout; must exceed cloud profiles' join_timeout
  #   resume_rate: 0       # ResumeRate, nodes per minute (0: no limit)
  #   suspend_rate: 0      # SuspendRate
  #   exclude_nodes: ~     # SuspendExcNodes hostlist besides the bare-metal nodes
  #   exclude_partitions: ~ # SuspendExcParts, a list
  # The autoscaler (docs/operations.md); an example, not the defaults
  # (defaults: enabled false, interval 60, job_flag vcluster-own, no profiles).
  # autoscale:
  #   enabled: true
  #   interval: 60         # seconds between runs
  #   job_flag: vcluster-own  # sbatch --comment=vcluster-own[:<profile>]
  #   profiles:
  #     htc:
  #       min_nodes: 0     # kept ready even when idle
  #       max_nodes: 16    # default: the profile's max_nodes
  #       idle_time: 600   # seconds idle before a node is retired
  #       warm_pool: 2     # nodes kept suspended for a fast resume
  #       per_job: false   # flagged jobs get their own nodes
  # Node liveness (docs/operations.md); defaults.
  # liveness:
  #   enabled: true        # false: the scheduled check only reports
  #   timeout: 30          # seconds a flagged node's minion may take to answer (a
  #                        # silent minion alone never sets a node DOWN: slurmd decides)
  #   baremetal: true      # also watch bare-metal Slurm nodes that are minions
  #   resume: true         # undo vcluster's own DOWN once its slurmd answers again
  # What vcluster.suspend / vcluster.resume do unless told; defaults.
  # suspend:
  #   mode: suspend        # freeze | pause | save | suspend (save, or freeze on LXD); docs/policy.md#suspend-modes
  #   resume_timeout: 120  # seconds for minion and slurmd after the provider resume
  # Preemption, an example (default: enabled false, no partitions): a job of
  # `partitions` suspends the `preemptible` virtual nodes on its hypervisor
  # host. Needs the vcluster_slurm_events engine in the controller minion's
  # config; the controller's highstate fails without it.
  # Prometheus metrics file, rewritten by the master's vcluster_tasks engine
  # for node_exporter's textfile collector (docs/operations.md):
  # metrics:
  #   path: /var/lib/node_exporter/textfile/vcluster.prom
  #   interval: 60
  # preemption:
  #   enabled: false
  #   partitions: [batch]  # jobs in these partitions preempt
  #   preemptible: [htc]   # nodes whose profile partition is listed may be suspended
  #   mode: suspend        # as suspend:mode
  #   migrate: false       # at job end, move a node off a still busy host first
  #   hypervisors: {}      # Slurm node name -> provider host (default: same name)
