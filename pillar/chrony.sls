# NTP for the cluster (salt/chrony): the controller serves time to the
# cluster network, every other node follows it. Defaults in
# salt/chrony/defaults.yaml.
chrony:
  # chrony.server: who may query the controller (local stack: vcbr0).
  allow:
    - 10.77.0.0/24
  # chrony.server: upstream sources; none on an isolated cluster (the
  # controller then serves its own clock at stratum 10).
  upstream: []
  # chrony.client: empty means slurm:controller:address.
  servers: []
  # Containers share the host kernel's clock and cannot set it:
  # the server runs chronyd -x there, a client does nothing.
  container:
    server: noclock
    client: skip
