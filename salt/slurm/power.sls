{#- slurm.power: Slurm's power-saving programs for cloud membership.

    Only on the slurmctld host, only when pillar vcluster_cloud declares
    cloud nodes (slurm.controller includes it). ResumeProgram,
    SuspendProgram and ResumeFailProgram run as SlurmUser; each one passes
    its hostlist to a root-owned helper through exactly one sudo rule, and
    the helper fires a Salt event with this host's minion (whose key the
    master trusts). The vcluster reactor does the cloud work on the master.
    SlurmUser can fire nothing else, and reads no Salt key. #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set power = slurm.power %}
{%- set salt_call = salt["file.join"](salt["file.dirname"](grains["pythonexecutable"]), "salt-call") %}
{%- set salt_call = salt_call if salt["file.file_exists"](salt_call) else (salt["cmd.which"]("salt-call") or "/usr/bin/salt-call") %}

slurm-power-sudo-installed:
  pkg.installed:
    - name: sudo

slurm-power-event-helper-managed:
  file.managed:
    - name: {{ power.event_helper }}
    - source: salt://{{ tpldir }}/files/vcluster-slurm-event.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: root
    - mode: '0755'
    - context:
        salt_call: {{ salt_call | json }}
        config_dir: {{ opts["config_dir"] | json }}
        prefix: {{ power.event_prefix | json }}

slurm-power-sudoers-managed:
  file.managed:
    - name: {{ power.sudoers }}
    - user: root
    - group: root
    - mode: '0440'
    - check_cmd: /usr/sbin/visudo -cf
    - contents: |
        # Managed by Salt (vcluster): Slurm's power-saving programs may fire
        # vcluster events, nothing else.
        Defaults!{{ power.event_helper }} !requiretty
        {{ slurm.config.SlurmUser }} ALL=(root) NOPASSWD: {{ power.event_helper }}
    - require:
      - pkg: slurm-power-sudo-installed
      - file: slurm-power-event-helper-managed

{%- for action, key in [("resume", "ResumeProgram"), ("suspend", "SuspendProgram"), ("resume_fail", "ResumeFailProgram")] %}

slurm-power-{{ action | replace("_", "-") }}-program-managed:
  file.managed:
    - name: {{ power.programs[action] }}
    - source: salt://{{ tpldir }}/files/vcluster-slurm-power.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: root
    - mode: '0755'
    - context:
        action: {{ action }}
        slurm_key: {{ key }}
        helper: {{ power.event_helper }}
        sudoers: {{ power.sudoers }}
    - require:
      - file: slurm-power-sudoers-managed
    - require_in:
      - service: slurm-controller-service-running
{%- endfor %}
