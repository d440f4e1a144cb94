# munge settings for cluster nodes (salt/munge); defaults in
# salt/munge/defaults.yaml.
#
# The key is not here. munge:key (the base64 of the key file, `base64 -w0`)
# comes from /etc/vcluster/pillar/secrets.sls, which the stack script writes
# outside the repository (mode 0600) and which top.sls assigns by minion id
# (nodegroup vcluster_cluster) only. The munge formula writes it with
# file.decode from pillar, so it never shows in state output.
munge:
  # Pillar path the formula reads the key from.
  key_pillar: 'munge:key'
