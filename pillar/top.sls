{#- Pillar top of vcluster.

Pillar roots (master config, written by the stack script):

    pillar_roots:
      base:
        - <checkout>/pillar        # this directory: examples, non-secret
        - /etc/vcluster/pillar     # site files, written by the stack script

Files of the site root (none of them in this repository):

  /etc/vcluster/pillar/site.sls      non-secret facts of this site (also
                                     vcluster:controller, see vcluster.sls):

      slurm:
        controller:                  # the slurmctld host
          host: <its `hostname`>     # slurmctld refuses any other name
          address: 10.77.0.1         # reachable by every node (vcbr0 here)
        nodes:                       # bare-metal compute nodes
          <hostname>:
            address: 10.77.0.1       # not 127.0.0.1: containers reach it here
            cpus: <nproc>
            memory: <MiB, at most what `slurmd -C` reports>
            features: [baremetal]    # joins partition batch by this feature
      chrony:
        allow: [10.77.0.0/24]        # optional, overrides pillar/chrony.sls

  /etc/vcluster/pillar/secrets.sls   mode 0600, root:

      munge:
        key: <base64 -w0 of the munge key>

  /etc/vcluster/pillar/accounting.sls  mode 0600, root; only the policy
                                     holders (the slurmctld host, the
                                     master's own minion) get it:

      slurm:
        accounting:
          storage_pass: <the password scripts/accounting-up.sh generated>

The vcluster policy (pillar `vcluster:`) is pillar/vcluster.sls here.

Targeting. Grains are written by the minion itself, so they only pick
non-secret data. Secrets go by minion id, through nodegroups that the stack
script defines in the master config (a minion id cannot be claimed without
its pre-accepted key):

    nodegroups:
      vcluster_cluster: 'L@<hostname> or vnode*'  # ids that get the munge key:
                                                  # bare metal + virtual pools
      vcluster_policy: 'L@<master's minion id>,<controller id>'
                                                  # ids that get the vcluster
                                                  # policy (pillar vcluster.sls)

An undefined nodegroup matches nothing: without it no minion gets the key.
Missing site files are skipped (ignore_missing); the states then fail with a
message naming the missing pillar key.

The master's ext_pillar adds, per minion: vcluster_self (a registry node's
own name, profile, sizes, features, membership) and vcluster_nodes (static
virtual nodes, for every holder of a full slurm.conf). Later files win:
site.sls overrides the examples here. #}
base:
  'G@roles:slurm-controller or G@roles:slurm-compute':
    - match: compound
    - ignore_missing: True
    - slurm
    - munge
    - chrony
    - nfs
  # site.sls must come after vcluster.sls wherever both apply: Salt renders
  # each SLS once, at its first place in the merged top, and later files
  # win. The policy holders (the slurmctld host among them) get it from the
  # vcluster_policy block, after the example policy; the other cluster
  # nodes from here. (Compound parentheses need the spaces.)
  '( G@roles:slurm-controller or G@roles:slurm-compute ) and not N@vcluster_policy':
    - match: compound
    - ignore_missing: True
    - site
  vcluster_cluster:
    - match: nodegroup
    - ignore_missing: True
    - secrets
  vcluster_policy:
    - match: nodegroup
    - ignore_missing: True
    - vcluster
    - site
    - accounting
