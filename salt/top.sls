{#- State top: by grain `roles` (a list), bare metal and virtual alike.
    Virtual nodes get roles [slurm-compute, vcluster-virtual] at first boot;
    slurm.compute tells them apart from bare metal by pillar vcluster_self /
    grain vcluster. A host with both roles (the local stack's controller is
    also a compute node) is the NTP and NFS server and no client of itself. #}
base:
  'G@roles:slurm-controller or G@roles:slurm-compute':
    - match: compound
    - munge
  'roles:slurm-controller':
    - match: grain
    - slurm.controller
    - chrony.server
    - nfs.server
  'roles:slurm-compute':
    - match: grain
    - slurm.compute
  'G@roles:slurm-compute and not G@roles:slurm-controller':
    - match: compound
    - chrony.client
    - nfs.client
