"""OpenNebula provider: virtual nodes are OpenNebula VMs, driven over XML-RPC.

How a node is made (see docs/opennebula.md for the operator's side):

* ``one.template.instantiate`` of the profile's VM template (``template`` in
  the profile, else ``image``), one call per node: OpenNebula has no
  multi-create. The extra template (XML, root ``TEMPLATE``) sets the name,
  ``VCPU``/``CPU``/``MEMORY``, ``NIC=[NETWORK, IP]`` when the profile names a
  virtual network, a ``CONTEXT`` that carries the boot files, and the tags
  ``VCLUSTER_CLUSTER``, ``VCLUSTER_NODE``, ``VCLUSTER_PROFILE``,
  ``VCLUSTER_REGISTRY_ID``. OpenNebula keeps attributes it does not know in
  the VM's ``USER_TEMPLATE``, where ``list()`` reads them back.
* Boot files travel in ``CONTEXT/START_SCRIPT_BASE64``: a POSIX shell script
  that one-context runs at boot; it writes each file (base64 inside the
  script, written to a temporary name, chmod, then renamed) and restarts the
  minion. ``boot: cloud_init`` puts a ``#cloud-config`` into
  ``CONTEXT/USER_DATA`` instead, for images that run cloud-init.
* ``list()`` is one ``one.vmpool.infoextended`` call (VMs of the user, every
  state but DONE), filtered on ``VCLUSTER_CLUSTER``.

Actions are checked against the VM's STATE/LCM_STATE before they are sent
(the rules of OpenNebula's DispatchManager), and the server's own ACTION
errors are mapped to :class:`ProviderStateError` too. The session string
(``user:password``) comes from a master-only file or pillar and never
appears in a repr, a log record, a return value or an exception.

Modules: :mod:`.provider` (the class), :mod:`.api` (the XML-RPC connection
and its error mapping), :mod:`.states` (state tables, action rules),
:mod:`.vms` (a VM's XML: the extra template, tags read back). The driver's
options are in :mod:`vcluster.providers.opennebula_options`.
"""

from vcluster.providers.opennebula.provider import ONE_ACTIONS, SUSPEND_MODES, OpenNebulaProvider
from vcluster.providers.opennebula.states import (
    ALLOWED_LABELS,
    LCM_STATES,
    LCM_STATUS,
    VM_STATES,
    VM_STATUS,
    state_label,
    state_names,
    status_of,
)
from vcluster.providers.opennebula.vms import start_script

__all__ = [
    "ALLOWED_LABELS", "LCM_STATES", "ONE_ACTIONS", "LCM_STATUS", "SUSPEND_MODES", "VM_STATES", "VM_STATUS", "OpenNebulaProvider",
    "start_script", "state_label", "state_names", "status_of",
]
