{#- slurm.events: vcluster's hooks in slurmctld, each one only while a
    feature needs it (map.jinja decides; slurm.conf.jinja names them):

    - preemption (vcluster:preemption): job start and end -> Salt event.
      PrologSlurmctld (start) and the jobcomp/script program (end) run as
      SlurmUser, which cannot reach Salt (the minion's key and sockets are
      root's) and must hold no credential. So they only append a line to a
      spool file that SlurmUser owns; the controller minion's
      vcluster_slurm_events engine (root) wakes on inotify when it grows and
      fires vcluster/slurm/job on the master, where the reactor calls
      vcluster.on_slurm_event. No sudo rule, no helper running as root, no
      polling of Slurm. The end is not an EpilogSlurmctld: that one delays
      the start of every next job of the cluster (docs/operations.md).
    - power saving (cloud profiles): PrologSlurmctld holds jobs of cloud
      partitions until their nodes registered; the waiting jobs share one
      poller (power_dir).

    - site mode (slurm:manage include): a site's own PrologSlurmctld and
      jobcomp/script program, which vcluster's lines replace in the file
      the site Includes, run first from vcluster's scripts (`chain`) with
      their exit status kept.

    The spool file grows by one short line per event of a preempting
    partition; the engine starts over when it is truncated or replaced.
    With no such feature nothing here is installed, and slurm.conf names no
    hook (controller.sls removes the scripts once slurmctld runs without
    them). #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- set events = slurm.events %}
{%- set partitions = events.preempt_partitions %}
{%- set hooks = events.config %}
{%- if partitions %}

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
        # vcluster Slurm job events, appended by {{ events.prolog }} and {{ events.jobcomp }}
    - require:
      - file: slurm-events-spool-directory
{%- endif %}
{%- if events.power_partitions %}

slurm-events-power-directory:
  file.directory:
    - name: {{ events.power_dir }}
    - user: {{ slurm.lookup.user }}
    - group: {{ slurm.lookup.group }}
    - mode: '0750'
    - makedirs: True
{%- endif %}

{%- for kind, path, key in [("start", events.prolog, "PrologSlurmctld"), ("end", events.jobcomp, "JobCompLoc")] if key in hooks %}

slurm-events-{{ "prolog" if kind == "start" else "jobcomp" }}-managed:
  file.managed:
    - name: {{ path }}
    - source: salt://{{ tplroot }}/files/slurmctld-event.sh.jinja
    - template: jinja
    - context:
        kind: {{ kind }}
        spool: {{ events.spool }}
        partitions: {{ partitions | json }}
        power_partitions: {{ (events.power_partitions if kind == "start" else []) | json }}
        power_wait: {{ events.power_wait }}
        power_dir: {{ events.power_dir }}
        chain: {{ ((slurm.site.chain.prolog if kind == "start" else slurm.site.chain.jobcomp) or "") | json }}
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
