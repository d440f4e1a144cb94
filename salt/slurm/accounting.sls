{#- slurm.accounting: slurmdbd on the controller (included by slurm.controller
    when pillar slurm:accounting:enabled and slurm:manage is full).

    The database is MariaDB on this host, on its Unix socket only, with the
    database and user scripts/accounting-up.sh creates; its password comes
    from pillar slurm:accounting:storage_pass, which only the controller
    gets (pillar/top.sls). slurmdbd.conf is created empty with its final
    owner and mode 0600 first, then filled with show_changes off: the
    password never shows in a return, a diff or an event.

    slurmdbd runs before slurmctld, and the cluster is registered with
    sacctmgr (idempotent) before slurmctld first connects. Slurm adds the
    `root` account and user with the cluster; jobs of other users are
    recorded without an association as long as AccountingStorageEnforce is
    not set (docs/slurm-site.md). #}
{%- from tpldir ~ "/map.jinja" import slurm with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- set acct = slurm.accounting %}
{%- set cluster = slurm.config.ClusterName | string %}
{%- set sacctmgr = slurm.lookup.sacctmgr %}

include:
  - munge
  - {{ tplroot }}.config

slurm-accounting-package-installed:
  pkg.installed:
    - pkgs: {{ slurm.lookup.dbd_pkgs | json }}
    - skip_suggestions: True

slurm-accounting-config-permissions:
  file.managed:
    - name: {{ slurm.lookup.dbd_config_file }}
    - user: {{ slurm.lookup.user }}
    - group: {{ slurm.lookup.group }}
    - mode: '0600'
    - replace: False
    - show_changes: False
    - require:
      - pkg: slurm-accounting-package-installed
      - file: slurm-config-directory
{%- if not (acct.storage_pass | string) is match("^[A-Za-z0-9]{16,}$") %}

slurm-accounting-config-managed:
  test.fail_without_changes:
    - comment: >-
        pillar slurm:accounting:storage_pass is missing or not 16+ letters
        and digits (scripts/accounting-up.sh makes it; the site pillar
        accounting.sls gives it to the controller only); slurmdbd.conf not
        written
{%- elif cluster is not match("^[A-Za-z0-9_]+$") %}

slurm-accounting-config-managed:
  test.fail_without_changes:
    - comment: {{ ("pillar slurm:config:ClusterName is " ~ cluster ~ ", expected letters, digits and _; slurmdbd.conf not written") | yaml_dquote }}
{%- else %}

slurm-accounting-config-managed:
  file.managed:
    - name: {{ slurm.lookup.dbd_config_file }}
    - source: salt://{{ tplroot }}/files/slurmdbd.conf.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: {{ slurm.lookup.user }}
    - group: {{ slurm.lookup.group }}
    - mode: '0600'
    - show_changes: False
    - require:
      - file: slurm-accounting-config-permissions
{%- endif %}

slurm-accounting-service-running:
  service.running:
    - name: {{ slurm.lookup.dbd_service }}
    - enable: True
    - require:
      - pkg: slurm-accounting-package-installed
      - service: munge-service-running
    - watch:
      - slurm-accounting-config-managed

# The cluster, once: sacctmgr reaches slurmdbd through slurm.conf
# (AccountingStorageHost). After a (re)start slurmdbd needs a moment before
# it answers: wait for it, bounded.
slurm-accounting-cluster-registered:
  cmd.run:
    - name: >-
        timeout 120 sh -c 'until {{ sacctmgr }} --noheader show cluster >/dev/null 2>&1; do sleep 0.5; done' &&
        { {{ sacctmgr }} --noheader --parsable2 show cluster format=cluster | grep -qx {{ cluster }} ||
        {{ sacctmgr }} --immediate add cluster {{ cluster }}; }
    - unless: {{ sacctmgr }} --noheader --parsable2 show cluster format=cluster | grep -qx {{ cluster }}
    - require:
      - service: slurm-accounting-service-running
      - slurm-config-file-managed
