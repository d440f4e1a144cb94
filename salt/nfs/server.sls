{#- nfs.server: export pillar nfs:exports from the controller. #}
{%- from tpldir ~ "/map.jinja" import nfs with context %}
{%- set tplroot = tpldir.split("/")[0] %}
{%- if not nfs.enabled %}

nfs-server-disabled:
  test.succeed_without_changes:
    - comment: pillar nfs:enabled is false; nothing exported
{%- else %}

nfs-server-package-installed:
  pkg.installed:
    - pkgs: {{ nfs.lookup.server_pkgs | json }}
    - skip_suggestions: True
{%-   for path, export in nfs.exports | dictsort %}
{%-     set export = salt["slsutil.merge"](nfs.export_defaults, export or {}, strategy="recurse") %}
{%-     if export.create %}

nfs-server-export-{{ path }}-directory:
  file.directory:
    - name: {{ path }}
    - user: {{ export.user }}
    - group: {{ export.group }}
    - mode: '{{ export.mode }}'
    - makedirs: True
    - require_in:
      - file: nfs-server-exports-file-managed
{%-     endif %}
{%-   endfor %}

nfs-server-exports-file-managed:
  file.managed:
    - name: {{ nfs.lookup.exports_file }}
    - source: salt://{{ tplroot }}/files/exports.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: nfs-server-package-installed

nfs-server-service-running:
  service.running:
    - name: {{ nfs.lookup.server_service }}
    - enable: True
    - require:
      - file: nfs-server-exports-file-managed

nfs-server-exports-reloaded:
  cmd.run:
    - name: {{ nfs.lookup.exportfs }} -ra
    - onchanges:
      - file: nfs-server-exports-file-managed
    - require:
      - service: nfs-server-service-running
{%- endif %}
