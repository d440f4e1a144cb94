{#- slurm.compute: slurmd, for bare metal and virtual nodes alike.

    bare metal, and virtual nodes in static membership:
        full slurm.conf (slurm.config); slurmd finds its NodeName line.
    virtual nodes in cloud membership (configless): their name is declared
        State=CLOUD on the controller; slurmd -b --conf-server <ctl> -N <name>.
    virtual nodes in dynamic membership (configless):
        no slurm.conf; /etc/default/slurmd makes slurmd register itself:
        slurmd -Z --conf-server <controller> --conf "CPUs= RealMemory= Feature=" -N <name>
        Sizes and features come from pillar vcluster_self (or grain vcluster).
        Debian's unit refuses to start without slurm.conf, hence a systemd
        drop-in clearing that condition (slurmd waits for its options file
        instead). The node image ships the same drop-in byte for byte, so a
        node's first highstate finds it in place and needs no daemon-reload.
        Virtual nodes run systemd; the sysvinit script cannot start a
        configless slurmd.

    A changed slurm.conf restarts slurmd only with static/cloud membership
    (new NodeName lines need it); otherwise slurmctld's `scontrol reconfigure`
    tells the running slurmd to re-read it.

    By Slurm release (slurm.release, map.jinja; docs/slurm-versions.md):
    - instance_fields (23.11+): a virtual node's slurmd also gets
      `--instance-id`/`--instance-type` from vcluster_self (or grain
      vcluster) instance_id/instance_type, when they are there: slurmd's
      registration sets InstanceId/InstanceType to what it was started
      with, so without them every slurmd (re)start clears what vcluster
      recorded. Not `--extra`: vcluster's Extra names the node's current
      host, which a migration changes, and a registration keeps the Extra
      that `scontrol update` set unless slurmd has `--extra`.
    - slurmd_notify (23.11+: slurmd.service is Type=notify): a configless
      slurmd is "started" only once it has its configuration, and it asks
      the controller again every 10 s; a drop-in bounds systemd's start
      timeout with slurm:slurmd_start_timeout, so a highstate on a node
      whose controller does not answer fails after that long, with the
      unit's last journal lines, instead of blocking (systemd's default is
      90 s); the next highstate starts slurmd again.
    On a release that is not supported, or none found, the options file
    state fails with one sentence and nothing is written. #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- set node = slurm.node %}
{%- set restart_on_conf_change = node.membership in ["static", "cloud"] %}
{%- set systemd = grains.get("init") == "systemd" %}

include:
  - munge
{%- if not node.configless %}
  - {{ tplroot }}.config
{%- endif %}

slurm-compute-package-installed:
  pkg.installed:
    - pkgs: {{ slurm.lookup.compute_pkgs | json }}
    - skip_suggestions: True

{%- if node.configless %}
{%-   set missing = [] %}
{%-   for key in ["cpus", "memory"] if not node[key] %}
{%-     do missing.append("vcluster_self:" ~ key) %}
{%-   endfor %}
{%-   if not slurm.controller.get("address") %}
{%-     do missing.append("slurm:controller:address") %}
{%-   endif %}
{%-   set port = slurm.config.get("SlurmctldPort") %}
{%-   set conf_server = slurm.controller.get("address", "") ~ ((":" ~ port) if port else "") %}
{%-   set node_conf = ["CPUs=" ~ node.cpus, "RealMemory=" ~ node.memory] %}
{%-   if node.features %}
{%-     do node_conf.append("Feature=" ~ node.features | join(",")) %}
{%-   endif %}
{%-   if node.membership == "cloud" %}
{#-     a State=CLOUD node of slurm.conf: sizes come from the controller.
        -b: report "booted now". slurmctld waits for a boot newer than its
        power-up request ("Still waiting for boot of node"); a container
        shares the host's kernel uptime and a thawed warm-pool node did not
        reboot, so without -b neither would ever register. #}
{%-     set options = ["-b", "--conf-server", conf_server, "-N", node.name] %}
{%-   else %}
{%-     set options = ["-Z", "--conf-server", conf_server,
                       "--conf", "'" ~ node_conf | join(" ") ~ "'", "-N", node.name] %}
{%-   endif %}
{%- else %}
{%-   set missing = [] %}
{%-   set options = ["-N", node.name] if node.virtual else [] %}
{%- endif %}
{%- set release = slurm.release %}
{%- set invalid = [] %}
{%- if node.virtual and release.instance_fields %}
{#-   the values slurmctld and slurmdbd take unquoted (vcluster/slurm/instance.py _VALUE) #}
{%-   for flag, key in [("--instance-id", "instance_id"), ("--instance-type", "instance_type")] if node[key] %}
{%-     if (node[key] | string) is match("^[A-Za-z0-9._:@/+,-]{1,128}$") %}
{%-       do options.extend([flag, node[key] | string]) %}
{%-     else %}
{%-       do invalid.append(key ~ " " ~ node[key] ~ " (expected 1-128 letters, digits and . _ : @ / + , -)") %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
{%- if slurm.slurmd_extra_options %}
{%-   do options.append(slurm.slurmd_extra_options) %}
{%- endif %}
{%- set notify_bound = node.configless and systemd and release.slurmd_notify %}

{%- if release.error %}

slurm-compute-options-file-managed:
  test.fail_without_changes:
    - comment: {{ (release.error ~ "; " ~ slurm.lookup.slurmd_defaults_file ~ " not written") | yaml_dquote }}
{%- elif missing %}

slurm-compute-options-file-managed:
  test.fail_without_changes:
    - comment: "dynamic virtual node {{ node.name }} lacks {{ missing | join(', ') }}"
{%- elif invalid %}

slurm-compute-options-file-managed:
  test.fail_without_changes:
    - comment: {{ ("virtual node " ~ node.name ~ ": invalid " ~ invalid | join(", ") ~ "; " ~ slurm.lookup.slurmd_defaults_file ~ " not written") | yaml_dquote }}
{%- else %}

slurm-compute-options-file-managed:
  file.managed:
    - name: {{ slurm.lookup.slurmd_defaults_file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (vcluster slurm formula); local edits are overwritten.
        # {{ "virtual" if node.virtual else "bare-metal" }} node {{ node.name }}, membership {{ node.membership }}
        SLURMD_OPTIONS="{{ options | join(" ") }}"
{%- endif %}

{%- if node.configless and systemd %}

slurm-compute-systemd-dropin-managed:
  file.managed:
    - name: {{ slurm.lookup.slurmd_systemd_dropin }}
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (vcluster): configless slurmd has no local slurm.conf;
        # it starts once Salt wrote its options (the node image ships this file).
        [Unit]
        ConditionPathExists=
        ConditionPathExists={{ slurm.lookup.slurmd_defaults_file }}

{%-   if notify_bound %}

slurm-compute-systemd-start-timeout-managed:
  file.managed:
    - name: {{ slurm.lookup.slurmd_systemd_start_dropin }}
    - makedirs: True
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (vcluster): slurmd {{ release.series }} is Type=notify and a
        # configless slurmd is started only once the controller sent its
        # configuration; bound the wait (pillar slurm:slurmd_start_timeout).
        [Service]
        TimeoutStartSec={{ slurm.slurmd_start_timeout | int }}
{%-   endif %}

slurm-compute-systemd-reloaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: slurm-compute-systemd-dropin-managed
{%-   if notify_bound %}
      - file: slurm-compute-systemd-start-timeout-managed
{%-   endif %}
{%- endif %}

slurm-compute-service-running:
  service.running:
    - name: {{ slurm.lookup.compute_service }}
    - enable: True
    - require:
      - pkg: slurm-compute-package-installed
      - service: munge-service-running
{%- if not node.configless and not restart_on_conf_change %}
      - slurm-config-file-managed
{%- endif %}
{%- if node.configless and systemd %}
      - cmd: slurm-compute-systemd-reloaded
{%- endif %}
    - watch:
      - slurm-compute-options-file-managed
{%- if node.configless and systemd %}
      - file: slurm-compute-systemd-dropin-managed
{%- endif %}
{%- if not node.configless and restart_on_conf_change %}
      - slurm-config-file-managed
{%- endif %}

{%- if notify_bound %}

# Only when the start failed: why, in the state's output (the start
# timeout ended a slurmd still asking the controller for its configuration).
slurm-compute-service-diagnosed:
  cmd.run:
    - name: >-
        echo "slurmd did not get its configuration from {{ conf_server }} within
        {{ slurm.slurmd_start_timeout | int }} s (slurm:slurmd_start_timeout); its last messages:";
        journalctl -u {{ slurm.lookup.compute_service }} -n 12 --no-pager -o cat 2>&1; exit 1
    - onfail:
      - service: slurm-compute-service-running
{%- endif %}
