{#- slurm.controller: slurmctld on the controller.

    A changed slurm.conf is applied with `scontrol reconfigure`. A change of
    the set of declared nodes (bare metal; static virtual nodes from the
    registry) is one Slurm 22.05 only takes on restart, and a reconfigure
    over it makes slurmctld drop the connection: the node set is kept in a
    file of its own, which the service `watch`es. The queue survives a
    restart: state is in StateSaveLocation and slurmctld is never started
    with -c.

    The same holds for vcluster's hooks (PrologSlurmctld, JobCompType,
    JobCompLoc: slurm:events in map.jinja): 22.05 loads the prep and
    jobcomp plugins once, so `scontrol reconfigure` neither starts nor
    stops running a hook. They are kept in a watched file too, and so is
    the accounting plugin (AccountingStorageType/Host: slurm.accounting,
    whose slurmdbd starts first). #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- set declared = slurm.nodes.keys() | list %}
{%- if slurm.membership in ["static", "cloud"] %}
{%-   for name, n in (salt["pillar.get"]("vcluster_nodes", {}) or {}) | dictsort if n.get("membership") != "cloud" %}
{%-     do declared.append(name) %}
{%-   endfor %}
{%- endif %}
{#- cloud membership: whole pools are declared State=CLOUD (pillar vcluster_cloud);
    powering names up and down changes nothing here #}
{%- for pname, c in ((salt["pillar.get"]("vcluster_cloud", {}) or {}).get("profiles") or {}) | dictsort %}
{%-   do declared.append(c.nodes ~ " CPUs=" ~ c.cpus ~ " RealMemory=" ~ c.memory ~ " Feature=" ~ c.features | join(",")) %}
{%- endfor %}

include:
  - munge
  - {{ tplroot }}.config
  - {{ tplroot }}.events
{%- if (salt["pillar.get"]("vcluster_cloud", {}) or {}).get("profiles") %}
  - {{ tplroot }}.power
{%- endif %}
{%- if slurm.accounting.active %}
  - {{ tplroot }}.accounting
{%- endif %}

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

slurm-controller-node-set-managed:
  file.managed:
    - name: {{ slurm.config.StateSaveLocation }}/vcluster-declared-nodes
    - contents: {{ (declared | sort | join("\n")) | json }}
    - mode: '0644'
    - require:
      - file: slurm-controller-statesave-directory

slurm-controller-hooks-managed:
  file.managed:
    - name: {{ slurm.config.StateSaveLocation }}/vcluster-hooks
    - contents: {{ (slurm.events.config | dictsort | map("join", "=") | join("\n")) | json }}
    - mode: '0644'
    - require:
      - file: slurm-controller-statesave-directory

slurm-controller-accounting-managed:
  file.managed:
    - name: {{ slurm.config.StateSaveLocation }}/vcluster-accounting
{%- if slurm.manage == "include" %}
    - contents: "AccountingStorage*: the site's own, in its slurm.conf"
{%- else %}
    - contents: {{ ("AccountingStorageType=" ~ slurm.config.AccountingStorageType ~ "\nAccountingStorageHost=" ~ (slurm.config.AccountingStorageHost or "")) | json }}
{%- endif %}
    - mode: '0644'
    - require:
      - file: slurm-controller-statesave-directory

slurm-controller-service-running:
  service.running:
    - name: {{ slurm.lookup.controller_service }}
    - enable: True
    - require:
      - pkg: slurm-controller-package-installed
      - file: slurm-controller-statesave-directory
      - service: munge-service-running
      # the hooks slurm.conf names must exist before slurmctld runs a job
{%- if "PrologSlurmctld" in slurm.events.config %}
      - file: slurm-events-prolog-managed
{%- endif %}
{%- if "JobCompLoc" in slurm.events.config %}
      - file: slurm-events-jobcomp-managed
{%- endif %}
      - slurm-config-file-managed
{%- if slurm.accounting.active %}
      # slurmdbd first, the cluster registered
      - cmd: slurm-accounting-cluster-registered
{%- endif %}
    - watch:
      - file: slurm-controller-node-set-managed
      - file: slurm-controller-hooks-managed
      - file: slurm-controller-accounting-managed

# Hook scripts slurm.conf no longer names (and the EpilogSlurmctld of
# earlier releases) go once slurmctld runs without them: a missing
# PrologSlurmctld would fail, and requeue, every job.
{%- for kind, key, path in [("prolog", "PrologSlurmctld", slurm.events.prolog), ("jobcomp", "JobCompLoc", slurm.events.jobcomp), ("epilog", "", slurm.events.epilog)] if key not in slurm.events.config %}

slurm-controller-unused-{{ kind }}-absent:
  file.absent:
    - name: {{ path }}
    - require:
      - service: slurm-controller-service-running
      - cmd: slurm-controller-answering
{%- endfor %}

# After a restart the init script returns before slurmctld answers: wait
# for it (bounded) so that what follows talks to the new daemon. When it
# never answers, the state's output ends with what slurmctld logged last.
slurm-controller-answering:
  cmd.run:
    - name: >-
        timeout 120 sh -c 'until {{ slurm.lookup.scontrol }} ping >/dev/null 2>&1; do sleep 0.5; done'
        || { echo "slurmctld did not answer scontrol ping within 120 s; the end of its log:";
        tail -n 15 {{ slurm.config.get("SlurmctldLogFile", "/var/log/slurm/slurmctld.log") }} 2>&1; exit 1; }
    - onchanges:
      - file: slurm-controller-node-set-managed
      - file: slurm-controller-hooks-managed
      - file: slurm-controller-accounting-managed
    - require:
      - service: slurm-controller-service-running

# Runs only when slurm.conf changed and slurmctld answers (after a restart
# it is redundant but harmless). Without a slurm.conf, scontrol would first
# try DNS SRV records: skip that.
slurm-controller-reconfigured:
  cmd.run:
    - name: {{ slurm.lookup.scontrol }} reconfigure
    - onlyif: test -e {{ slurm.lookup.config_file }} && {{ slurm.lookup.scontrol }} ping
    - onchanges:
      - slurm-config-file-managed
    - require:
      - service: slurm-controller-service-running
      - cmd: slurm-controller-answering
