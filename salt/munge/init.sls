{#- munge: package, shared key from pillar, munged running.

    The key file is first created empty with its final owner and mode 0400,
    then filled by file.decode from pillar: it is never world-readable, and
    the key never enters the rendered SLS (contents_pillar), the state return
    or a diff (file.decode reports checksums). #}
{%- from tpldir ~ "/map.jinja" import munge with context %}
{%- set have_key = salt["pillar.get"](munge.key_pillar) | length > 0 %}

munge-package-installed:
  pkg.installed:
    - name: {{ munge.lookup.pkg }}
    - skip_suggestions: True

munge-key-file-permissions:
  file.managed:
    - name: {{ munge.lookup.key_file }}
    - user: {{ munge.lookup.user }}
    - group: {{ munge.lookup.group }}
    - mode: '0400'
    - replace: False
    - show_changes: False
    - require:
      - pkg: munge-package-installed

{%- if have_key %}

munge-key-file-managed:
  file.decode:
    - name: {{ munge.lookup.key_file }}
    - contents_pillar: {{ munge.key_pillar }}
    - encoding_type: base64
    - checksum: sha256
    - require:
      - file: munge-key-file-permissions
{%- else %}

munge-key-file-managed:
  test.fail_without_changes:
    - comment: >-
        pillar {{ munge.key_pillar }} is missing: this minion is not targeted
        by the secrets pillar (see pillar/top.sls)
{%- endif %}

munge-service-running:
  service.running:
    - name: {{ munge.lookup.service }}
    - enable: True
    - require:
      - pkg: munge-package-installed
    - watch:
      - munge-key-file-managed
