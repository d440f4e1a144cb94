{#- salt/minion/<id>/start: join the minion if vcluster created it.
    One reaction, handed to the runner; it ignores (and logs) ids that are
    not registry nodes, so the controller and bare-metal minions pass by. #}
vcluster-join:
  runner.vcluster.on_minion_start:
    - args:
      - minion_id: {{ data['id'] | yaml_dquote }}
