"""A VM's XML both ways: the extra template that makes a node, and the vcluster fields read back from a VM.

The extra template (root ``TEMPLATE``) sets the name, ``VCPU``/``CPU``/
``MEMORY``, ``NIC=[NETWORK, IP]``, a ``CONTEXT`` that carries the boot files
(a start script, or cloud-config for ``boot: cloud_init``) and the tags
``VCLUSTER_<KEY>``, which OpenNebula keeps in the VM's ``USER_TEMPLATE``.
"""

import base64
import json
import shlex
import xml.etree.ElementTree as ET

from vcluster import bootstrap
from vcluster.providers.opennebula.api import BASE64_RUN
from vcluster.providers.opennebula.states import VM_STATES

TAG_PREFIX = "VCLUSTER_"
DEFAULT_START_COMMAND = "systemctl restart salt-minion"


def option(spec, config, key, default=None):
    """A profile's ``extra`` key, else the provider's option, else ``default``."""
    if spec is not None and key in spec.extra:
        return spec.extra[key]
    return config.get(key, default)


def extra_template(spec, config):
    """The XML extra template merged into the VM template for ``spec`` (``config``: the provider's options)."""
    root = ET.Element("TEMPLATE")
    _sub(root, "NAME", spec.name)
    _sub(root, "VCPU", int(spec.cpus))
    _sub(root, "CPU", _number(float(option(spec, config, "cpu_factor", 1.0)) * int(spec.cpus)))
    _sub(root, "MEMORY", int(spec.memory_mb))
    network = spec.network or config.get("network")
    if network:
        nic = ET.SubElement(root, "NIC")
        net = str(network)
        _sub(nic, "NETWORK_ID" if net.isdigit() else "NETWORK", net)
        owner = option(spec, config, "network_owner")
        if owner and not net.isdigit():
            _sub(nic, "NETWORK_UNAME", owner)
        if spec.address:
            _sub(nic, "IP", spec.address)
    ctx = ET.SubElement(root, "CONTEXT")
    context = {"NETWORK": "YES", "SET_HOSTNAME": spec.name}
    for source in (config.get("context"), spec.extra.get("context")):
        context.update({str(k).upper(): v for k, v in (source or {}).items()})
    for key, value in context.items():
        _sub(ctx, key, value)
    start_command = option(spec, config, "start_command", DEFAULT_START_COMMAND)
    if option(spec, config, "boot", "start_script") == "cloud_init":
        _sub(ctx, "USER_DATA", _b64(bootstrap.cloud_config(spec.boot_files, start_command=start_command)))
        _sub(ctx, "USERDATA_ENCODING", "base64")
    else:
        _sub(ctx, "START_SCRIPT_BASE64", _b64(start_script(spec.boot_files, start_command)))
    requirements = option(spec, config, "sched_requirements")
    if requirements:
        _sub(root, "SCHED_REQUIREMENTS", requirements)
    for key, value in spec.tags.items():
        _sub(root, TAG_PREFIX + str(key).upper(), value)
    return ET.tostring(root, encoding="unicode")


# -- boot files in the context ---------------------------------------------------

def start_script(files, start_command=DEFAULT_START_COMMAND):
    """POSIX sh that writes ``files`` atomically, then runs ``start_command``."""
    lines = [
        "#!/bin/sh",
        "# vcluster boot files, run by OpenNebula contextualization (START_SCRIPT_BASE64)",
        "set -eu",
        "umask 077",
        "put() {",
        '  mkdir -p "$(dirname "$1")"',
        "  printf '%s' \"$3\" | base64 -d > \"$1.vcluster-new\"",
        '  chmod "$2" "$1.vcluster-new"',
        '  mv -f "$1.vcluster-new" "$1"',
        "}",
    ]
    for f in files:
        content = base64.b64encode(f.content.encode("utf-8")).decode("ascii")
        lines.append(f"put {shlex.quote(f.path)} {int(f.mode):o} '{content}'")
    if start_command:
        lines.append(start_command)
    return "\n".join(lines) + "\n"



def _sub(parent, tag, value):
    ET.SubElement(parent, tag).text = str(value)


def _number(value):
    return int(value) if float(value).is_integer() else round(value, 2)


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _attrs(section):
    return dict(section) if section else {}


def tags_of(vm):
    """vcluster tags from USER_TEMPLATE (TEMPLATE as a fallback)."""
    tags = {}
    for section in (_attrs(getattr(vm, "TEMPLATE", None)), _attrs(getattr(vm, "USER_TEMPLATE", None))):
        for key, value in section.items():
            if key.startswith(TAG_PREFIX) and isinstance(value, str):
                tags[key[len(TAG_PREFIX):].lower()] = value
    return tags


def error_of(vm):
    error = _attrs(getattr(vm, "USER_TEMPLATE", None)).get("ERROR")
    if isinstance(error, dict):
        error = error.get("MESSAGE") or json.dumps(error, sort_keys=True)
    return BASE64_RUN.sub("<redacted>", str(error))[:500] if error else None


def address_of(vm):
    nics = _attrs(getattr(vm, "TEMPLATE", None)).get("NIC")
    if isinstance(nics, dict):
        nics = [nics]
    for nic in nics or []:
        if isinstance(nic, dict) and nic.get("IP"):
            return nic["IP"]
    return None


def last_history(vm):
    records = getattr(vm, "HISTORY_RECORDS", None)
    history = getattr(records, "HISTORY", None) if records is not None else None
    return history[-1] if history else None


def host_of(vm):
    sname = VM_STATES[int(vm.STATE)] if 0 <= int(vm.STATE) < len(VM_STATES) else ""
    if sname in ("PENDING", "HOLD", "INIT", "CLONING", "CLONING_FAILURE", "DONE", "STOPPED", "UNDEPLOYED"):
        return None
    last = last_history(vm)
    return str(last.HOSTNAME) if last is not None and last.HOSTNAME else None

