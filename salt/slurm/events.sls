{#- slurm.events: Slurm job start/end -> Salt event, for vcluster preemption.

    slurmctld runs PrologSlurmctld/EpilogSlurmctld as SlurmUser, which cannot
    reach Salt (the minion's key and sockets are root's) and must hold no
    credential. So the scripts only append a line to a spool file that
    SlurmUser owns; the controller minion's vcluster_slurm_events engine
    (root) wakes on inotify when it grows and fires vcluster/slurm/job on
    the master, where the reactor calls vcluster.on_slurm_event. No sudo
    rule, no helper running as root, no polling of Slurm.

    The spool file grows by one short line per job of a preempting
    partition; the engine starts over when it is truncated or replaced. #}
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

{#- The controller's minion sends the spool's lines with the
    vcluster_slurm_events engine (_engines/), which wakes on inotify: a
    beacon would look once a second. Engines start with the minion, so the
    engine is minion configuration, not something a state run can switch on;
    with preemption enabled, a controller without it fails here in one
    sentence instead of never preempting. #}
{%- set engine_default_spool = "/var/spool/vcluster-slurm/events" %}{#- the engine's DEFAULT_SPOOL #}
{%- set engine = {} %}
{%- for item in salt["config.option"]("engines") or [] %}
{%-   if item == "vcluster_slurm_events" or (item is mapping and "vcluster_slurm_events" in item) %}
{%-     set options = (item["vcluster_slurm_events"] if item is mapping else none) or {} %}
{%-     do engine.update({"spool": options.get("spool", engine_default_spool)}) %}
{%-   endif %}
{%- endfor %}
{%- if partitions and engine.get("spool") != events.spool %}

slurm-events-engine-configured:
  test.fail_without_changes:
    - comment: >-
        preemption is enabled but the controller's minion does not run the
        vcluster_slurm_events engine on {{ events.spool }}: add
        "engines: [{vcluster_slurm_events: {spool: {{ events.spool }}}}]" to its
        configuration and restart it
{%- else %}

slurm-events-engine-configured:
  test.succeed_without_changes:
    - comment: >-
        {{ "the vcluster_slurm_events engine sends " ~ events.spool if engine else "preemption is disabled: no engine needed" }}
{%- endif %}
