{#- salt/beacon/<minion>/vcluster_slurm/job: a line from Slurm's
    PrologSlurmctld/EpilogSlurmctld (salt/slurm/events.sls), read by the
    controller's log beacon. One reaction, handed to the runner, which trusts
    only the controller's beacon and re-reads the job from Slurm. #}
vcluster-slurm-job:
  runner.vcluster.on_slurm_event:
    - args:
      - minion_id: {{ data.get('id', '') | yaml_dquote }}
      - line: {{ data.get('raw', '') | yaml_dquote }}
