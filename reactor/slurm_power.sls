{#- vcluster/slurm/power/<resume|suspend|resume_fail>: fired by Slurm's
    power-saving programs through the controller's minion (salt/slurm/power.sls).
    One reaction, handed to the runner. data['id'] is the sending minion as
    the master authenticated it: the runner acts only when it is the
    controller named in the policy, on names of cloud profiles' pools. #}
{%- set payload = data.get('data') if data.get('data') is mapping else {} %}
vcluster-slurm-power:
  runner.vcluster.on_slurm_power:
    - args:
      - action: {{ tag.split('/')[-1] | yaml_dquote }}
      - nodes: {{ payload.get('nodes', '') | string | yaml_dquote }}
      - sender: {{ data.get('id', '') | string | yaml_dquote }}
      - resume_file: {{ payload.get('resume_file') | json }}
