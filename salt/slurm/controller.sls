{#- slurm.controller: slurmctld on the controller.

    A changed slurm.conf is applied with `scontrol reconfigure` (dynamic
    membership: nodes register themselves, nothing else changes). With static
    or cloud membership the NodeName lines change, which Slurm 22.05 only
    picks up on restart: then slurmctld restarts (the service `watch`es the
    file). The queue survives: state is in StateSaveLocation and slurmctld is
    never started with -c. #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- set restart_on_change = slurm.membership in ["static", "cloud"] %}

include:
  - munge
  - {{ tplroot }}.config

slurm-controller-package-installed:
  pkg.installed:
    - pkgs: {{ slurm.lookup.controller_pkgs | json }}
    - skip_suggestions: True

slurm-controller-statesave-directory:
  file.directory:
    - name: {{ slurm.config.StateSaveLocation }}
    - user: {{ slurm.lookup.user }}
    - group: {{ slurm.lookup.group }}
    - mode: '0750'
    - makedirs: True
    - require:
      - pkg: slurm-controller-package-installed

slurm-controller-service-running:
  service.running:
    - name: {{ slurm.lookup.controller_service }}
    - enable: True
    - require:
      - pkg: slurm-controller-package-installed
      - file: slurm-controller-statesave-directory
      - service: munge-service-running
{%- if restart_on_change %}
    - watch:
      - slurm-config-file-managed
{%- else %}
      - slurm-config-file-managed
{%- endif %}

# Runs only when slurm.conf changed and slurmctld answers: a slurmctld that
# this run just (re)started has read the new file already. (Without a
# slurm.conf, scontrol would first try DNS SRV records: skip that.)
slurm-controller-reconfigured:
  cmd.run:
    - name: {{ slurm.lookup.scontrol }} reconfigure
    - onlyif: test -e {{ slurm.lookup.config_file }} && {{ slurm.lookup.scontrol }} ping
    - onchanges:
      - slurm-config-file-managed
    - require:
      - service: slurm-controller-service-running
