{#- slurm.config: /etc/slurm/slurm.conf, shared by slurmctld and by every
    slurmd that reads a full slurm.conf (bare metal; static virtual nodes).
    Restart/reconfigure reactions live in slurm.controller and slurm.compute. #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}

slurm-config-directory:
  file.directory:
    - name: {{ slurm.lookup.config_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

{%- set cloud_error = (salt["pillar.get"]("vcluster_cloud", {}) or {}).get("error") %}
{%- if cloud_error %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ ("the vcluster policy is invalid, slurm.conf not written: " ~ cloud_error) | yaml_dquote }}
{%- elif slurm.events.error %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ (slurm.events.error ~ "; slurm.conf not written") | yaml_dquote }}
{%- elif slurm.controller.get("host") and slurm.controller.get("address") %}

slurm-config-file-managed:
  file.managed:
    - name: {{ slurm.lookup.config_file }}
    - source: salt://{{ tplroot }}/files/slurm.conf.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: slurm-config-directory
{%- else %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: >-
        pillar slurm:controller:host and slurm:controller:address are required
        (the site pillar provides them); slurm.conf not written
{%- endif %}
