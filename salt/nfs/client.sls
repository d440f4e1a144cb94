{#- nfs.client: mount pillar nfs:mounts (persisted in /etc/fstab). #}
{%- from tpldir ~ "/map.jinja" import nfs with context %}
{%- if not nfs.enabled %}

nfs-client-disabled:
  test.succeed_without_changes:
    - comment: pillar nfs:enabled is false; nothing mounted
{%- else %}

nfs-client-package-installed:
  pkg.installed:
    - pkgs: {{ nfs.lookup.client_pkgs | json }}
    - skip_suggestions: True
{%-   for path, mount in nfs.mounts | dictsort %}
{%-     set mount = salt["slsutil.merge"](nfs.mount_defaults, mount or {}, strategy="recurse") %}

nfs-client-mount-{{ path }}-mounted:
  mount.mounted:
    - name: {{ path }}
    - device: {{ mount.device }}
    - fstype: {{ mount.fstype }}
    - opts: {{ mount.opts | json }}
    - persist: {{ mount.persist }}
    - mkmnt: True
    - require:
      - pkg: nfs-client-package-installed
{%-   endfor %}
{%- endif %}
