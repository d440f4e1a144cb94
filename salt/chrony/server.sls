{#- chrony.server: NTP server on the Slurm controller for the cluster's
    networks (pillar chrony:allow). In a container it runs chronyd -x: it
    serves the host's clock without trying to set it (chrony:container). #}
{%- set role = "server" %}
{%- include tpldir ~ "/_common.jinja" with context %}
