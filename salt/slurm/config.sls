{#- slurm.config: /etc/slurm/slurm.conf, shared by slurmctld and by every
    slurmd that reads a full slurm.conf (bare metal; static virtual nodes).
    Restart/reconfigure reactions live in slurm.controller and slurm.compute.

    With slurm:manage include (site mode) the site's own slurm.conf is left
    as it is and only vcluster's part is written, to the file the site's
    slurm.conf Includes; the settings vcluster needs from the site's file
    are checked first (map.jinja, docs/slurm-site.md).

    What slurm.conf holds follows this host's Slurm release (slurm.release
    in map.jinja, e.g. cloud_reg_addrs before 23.11 only); without a
    supported release nothing is written. #}
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
{%- if slurm.release.error %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ (slurm.release.error ~ "; slurm.conf not written") | yaml_dquote }}
{%- elif slurm.site.error %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ (slurm.site.error ~ "; vcluster's Slurm configuration not written") | yaml_dquote }}
{%- elif cloud_error %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ ("the vcluster policy is invalid, slurm.conf not written: " ~ cloud_error) | yaml_dquote }}
{%- elif slurm.events.error %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ (slurm.events.error ~ "; slurm.conf not written") | yaml_dquote }}
{%- elif slurm.manage == "include" and slurm.site.missing %}

slurm-config-file-managed:
  test.fail_without_changes:
    - comment: {{ ("the site's " ~ slurm.lookup.config_file ~ " lacks what vcluster needs: " ~ slurm.site.missing | join(", ") ~ "; " ~ slurm.site.include_path ~ " not written (docs/slurm-site.md)") | yaml_dquote }}
{%- elif slurm.manage == "include" %}

{#- Site mode: the site's slurm.conf is never written here; vcluster's part
    goes to the file it Includes (map.jinja checked both). #}
slurm-config-file-managed:
  file.managed:
    - name: {{ slurm.site.include_path }}
    - source: salt://{{ tplroot }}/files/slurm.conf.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
        site_mode: True
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: slurm-config-directory
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
