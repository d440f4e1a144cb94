{#- chrony.client: follow the controller's NTP server (pillar chrony:servers,
    default slurm:controller:address). In a container (LXD virtual nodes)
    nothing is done by default: the container shares the host kernel's clock,
    which the host's own chrony keeps right (chrony:container:client). #}
{%- set role = "client" %}
{%- include tpldir ~ "/_common.jinja" with context %}
