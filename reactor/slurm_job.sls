{#- vcluster/slurm/job: a line from vcluster's PrologSlurmctld (job start) or jobcomp/script program (job end)
    (salt/slurm/events.sls), sent by the controller minion's
    vcluster_slurm_events engine with event.send. data['id'] is the sending
    minion as the master authenticated it. One reaction, handed to the
    runner, which trusts only the controller and re-reads the job from Slurm. #}
{%- set payload = data.get('data') if data.get('data') is mapping else {} %}
vcluster-slurm-job:
  runner.vcluster.on_slurm_event:
    - args:
      - minion_id: {{ data.get('id', '') | string | yaml_dquote }}
      - line: {{ payload.get('raw', '') | string | yaml_dquote }}
