{#- slurm.events: Slurm job start/end -> Salt event, for vcluster preemption.

    slurmctld runs PrologSlurmctld/EpilogSlurmctld as SlurmUser, which cannot
    reach Salt (the minion's key and sockets are root's) and must hold no
    credential. So the scripts only append a line to a spool file that
    SlurmUser owns; the controller minion's `log` beacon (root) reads new
    lines every loop_interval (1 s) and fires
    salt/beacon/<controller>/vcluster_slurm/job on the master, where the
    reactor calls vcluster.on_slurm_event. No sudo rule, no helper running as
    root, no polling of Slurm.

    The spool file grows by one short line per job of a preempting
    partition; the log beacon does not follow rotation, so truncate it only
    with the minion stopped (or re-apply this state). The header line keeps
    the beacon from skipping the first event (it seeks to the end of a file
    it sees empty). #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- set events = slurm.events %}
{%- set preemption = salt["pillar.get"]("vcluster:preemption", {}) or {} %}
{%- set partitions = ((preemption.get("partitions") or []) | select("match", "^[A-Za-z0-9_.-]+$") | list) if preemption.get("enabled") else [] %}
{#- Cloud membership: the prolog also holds a job on nodes Slurm is powering
    up until they registered (see the script), at most ResumeTimeout. #}
{%- set cloud = salt["pillar.get"]("vcluster_cloud", {}) or {} %}
{%- set power_partitions = [] %}
{%- set power_waits = [(cloud.get("power_save") or {}).get("resume_timeout") or 600] %}
{%- for c in (cloud.get("profiles") or {}).values() %}
{%-   do power_partitions.append(c.partition if c.partition and c.partition is match("^[A-Za-z0-9_.-]+$") else "*") %}
{%-   if c.get("resume_timeout") %}{% do power_waits.append(c.resume_timeout) %}{% endif %}
{%- endfor %}

slurm-events-spool-directory:
  file.directory:
    - name: {{ salt["file.dirname"](events.spool) }}
    - user: {{ slurm.lookup.user }}
    - group: {{ slurm.lookup.group }}
    - mode: '0750'
    - makedirs: True

slurm-events-spool-file:
  file.managed:
    - name: {{ events.spool }}
    - user: {{ slurm.lookup.user }}
    - group: {{ slurm.lookup.group }}
    - mode: '0640'
    - replace: False
    - contents: |
        # vcluster Slurm job events, appended by {{ events.prolog }} and {{ events.epilog }}
    - require:
      - file: slurm-events-spool-directory

{%- for kind, path in [("start", events.prolog), ("end", events.epilog)] %}

slurm-events-{{ "prolog" if kind == "start" else "epilog" }}-managed:
  file.managed:
    - name: {{ path }}
    - source: salt://{{ tplroot }}/files/slurmctld-event.sh.jinja
    - template: jinja
    - context:
        kind: {{ kind }}
        spool: {{ events.spool }}
        partitions: {{ partitions | json }}
        power_partitions: {{ power_partitions | unique | list | json }}
        power_wait: {{ power_waits | max | int }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True
{%- endfor %}

{#- Beacons live in the running minion daemon; `salt-call --local` without
    one (image builds, the functional tests) cannot list or add them. #}
{%- if salt["beacons.list"](return_yaml=False) is none %}

slurm-events-beacon-present:
  test.show_notification:
    - text: >-
        no running minion answers beacons.list here: the log beacon
        vcluster_slurm is not configured (apply this state through the minion)
{%- else %}

slurm-events-beacon-present:
  beacon.present:
    - name: vcluster_slurm
    - save: True
    - beacon_module: log
    - file: {{ events.spool }}
    - tags:
        job:
          regex: '^vcluster-slurm-event v1 '
    - require:
      - file: slurm-events-spool-file
{%- endif %}
