# Shared file systems (salt/nfs). The local stack has no NFS in its kernel
# and shares directories with LXD disk devices instead, so NFS is off; the
# exports and mounts below are what a real site would use.
nfs:
  enabled: false
  exports:
    /srv/vcluster/shared:
      clients:
        - hosts: 10.77.0.0/24
          options: [rw, sync, no_subtree_check, no_root_squash]
  mounts:
    /shared:
      device: 10.77.0.1:/srv/vcluster/shared
      fstype: nfs
      opts: [rw, hard, _netdev]
