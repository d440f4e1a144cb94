"""OpenNebula's VM and host states, what they mean to vcluster, and which action each state accepts.

The numbers are OpenNebula's ("Virtual Machines States Reference"); the
action rules are its DispatchManager's. No I/O, no pyone.
"""

from vcluster.providers.base import Status

# -- OpenNebula's state numbers (docs: "Virtual Machines States Reference") --

VM_STATES = (
    "INIT", "PENDING", "HOLD", "ACTIVE", "STOPPED", "SUSPENDED", "DONE", "FAILED",
    "POWEROFF", "UNDEPLOYED", "CLONING", "CLONING_FAILURE",
)
LCM_STATES = (
    "LCM_INIT", "PROLOG", "BOOT", "RUNNING", "MIGRATE", "SAVE_STOP", "SAVE_SUSPEND",
    "SAVE_MIGRATE", "PROLOG_MIGRATE", "PROLOG_RESUME", "EPILOG_STOP", "EPILOG",
    "SHUTDOWN", "CANCEL", "FAILURE", "CLEANUP_RESUBMIT", "UNKNOWN", "HOTPLUG",
    "SHUTDOWN_POWEROFF", "BOOT_UNKNOWN", "BOOT_POWEROFF", "BOOT_SUSPENDED", "BOOT_STOPPED",
    "CLEANUP_DELETE", "HOTPLUG_SNAPSHOT", "HOTPLUG_NIC", "HOTPLUG_SAVEAS",
    "HOTPLUG_SAVEAS_POWEROFF", "HOTPLUG_SAVEAS_SUSPENDED", "SHUTDOWN_UNDEPLOY",
    "EPILOG_UNDEPLOY", "PROLOG_UNDEPLOY", "BOOT_UNDEPLOY", "HOTPLUG_PROLOG_POWEROFF",
    "HOTPLUG_EPILOG_POWEROFF", "BOOT_MIGRATE", "BOOT_FAILURE", "BOOT_MIGRATE_FAILURE",
    "PROLOG_MIGRATE_FAILURE", "PROLOG_FAILURE", "EPILOG_FAILURE", "EPILOG_STOP_FAILURE",
    "EPILOG_UNDEPLOY_FAILURE", "PROLOG_MIGRATE_POWEROFF", "PROLOG_MIGRATE_POWEROFF_FAILURE",
    "PROLOG_MIGRATE_SUSPEND", "PROLOG_MIGRATE_SUSPEND_FAILURE", "BOOT_UNDEPLOY_FAILURE",
    "BOOT_STOPPED_FAILURE", "PROLOG_RESUME_FAILURE", "PROLOG_UNDEPLOY_FAILURE",
    "DISK_SNAPSHOT_POWEROFF", "DISK_SNAPSHOT_REVERT_POWEROFF", "DISK_SNAPSHOT_DELETE_POWEROFF",
    "DISK_SNAPSHOT_SUSPENDED", "DISK_SNAPSHOT_REVERT_SUSPENDED", "DISK_SNAPSHOT_DELETE_SUSPENDED",
    "DISK_SNAPSHOT", "DISK_SNAPSHOT_REVERT", "DISK_SNAPSHOT_DELETE", "PROLOG_MIGRATE_UNKNOWN",
    "PROLOG_MIGRATE_UNKNOWN_FAILURE", "DISK_RESIZE", "DISK_RESIZE_POWEROFF",
    "DISK_RESIZE_UNDEPLOYED", "HOTPLUG_NIC_POWEROFF", "HOTPLUG_RESIZE",
    "HOTPLUG_SAVEAS_UNDEPLOYED", "HOTPLUG_SAVEAS_STOPPED", "BACKUP", "BACKUP_POWEROFF",
)

S = Status
#: STATE (not ACTIVE) -> Status. OpenNebula STOPPED keeps the memory image (in
#: the system datastore) and resumes the guest where it stopped: SUSPENDED.
#: UNDEPLOYED keeps only the disks, like Nova's shelved-offloaded: SHELVED.
VM_STATUS = {
    "INIT": S.BUILDING, "PENDING": S.BUILDING, "HOLD": S.BUILDING, "STOPPED": S.SUSPENDED,
    "SUSPENDED": S.SUSPENDED, "DONE": S.DELETED, "FAILED": S.ERROR, "POWEROFF": S.STOPPED,
    "UNDEPLOYED": S.SHELVED, "CLONING": S.BUILDING, "CLONING_FAILURE": S.ERROR,
}
#: LCM_STATE of an ACTIVE VM -> Status. Every *_FAILURE is ERROR. Saving and
#: shutting down on the way to a resting state report RUNNING (the guest is
#: still on its host) so a wait for SUSPENDED/STOPPED does not end early;
#: operations on a resting VM (snapshot, hotplug, backup) report that rest.
LCM_STATUS = {
    "LCM_INIT": S.BUILDING, "PROLOG": S.BUILDING, "BOOT": S.BUILDING, "RUNNING": S.RUNNING,
    "MIGRATE": S.MIGRATING, "SAVE_STOP": S.RUNNING, "SAVE_SUSPEND": S.RUNNING,
    "SAVE_MIGRATE": S.MIGRATING, "PROLOG_MIGRATE": S.MIGRATING, "PROLOG_RESUME": S.BUILDING,
    "EPILOG_STOP": S.RUNNING, "EPILOG": S.DELETED, "SHUTDOWN": S.DELETED, "CANCEL": S.DELETED,
    "FAILURE": S.ERROR, "CLEANUP_RESUBMIT": S.BUILDING, "UNKNOWN": S.UNKNOWN,
    "HOTPLUG": S.RUNNING, "SHUTDOWN_POWEROFF": S.RUNNING, "BOOT_UNKNOWN": S.BUILDING,
    "BOOT_POWEROFF": S.BUILDING, "BOOT_SUSPENDED": S.BUILDING, "BOOT_STOPPED": S.BUILDING,
    "CLEANUP_DELETE": S.DELETED, "HOTPLUG_SNAPSHOT": S.RUNNING, "HOTPLUG_NIC": S.RUNNING,
    "HOTPLUG_SAVEAS": S.RUNNING, "HOTPLUG_SAVEAS_POWEROFF": S.STOPPED,
    "HOTPLUG_SAVEAS_SUSPENDED": S.SUSPENDED, "SHUTDOWN_UNDEPLOY": S.RUNNING,
    "EPILOG_UNDEPLOY": S.RUNNING, "PROLOG_UNDEPLOY": S.BUILDING, "BOOT_UNDEPLOY": S.BUILDING,
    "HOTPLUG_PROLOG_POWEROFF": S.STOPPED, "HOTPLUG_EPILOG_POWEROFF": S.STOPPED,
    "BOOT_MIGRATE": S.MIGRATING, "PROLOG_MIGRATE_POWEROFF": S.MIGRATING,
    "PROLOG_MIGRATE_SUSPEND": S.MIGRATING, "DISK_SNAPSHOT_POWEROFF": S.STOPPED,
    "DISK_SNAPSHOT_REVERT_POWEROFF": S.STOPPED, "DISK_SNAPSHOT_DELETE_POWEROFF": S.STOPPED,
    "DISK_SNAPSHOT_SUSPENDED": S.SUSPENDED, "DISK_SNAPSHOT_REVERT_SUSPENDED": S.SUSPENDED,
    "DISK_SNAPSHOT_DELETE_SUSPENDED": S.SUSPENDED, "DISK_SNAPSHOT": S.RUNNING,
    "DISK_SNAPSHOT_REVERT": S.RUNNING, "DISK_SNAPSHOT_DELETE": S.RUNNING,
    "PROLOG_MIGRATE_UNKNOWN": S.MIGRATING, "DISK_RESIZE": S.RUNNING,
    "DISK_RESIZE_POWEROFF": S.STOPPED, "DISK_RESIZE_UNDEPLOYED": S.SHELVED,
    "HOTPLUG_NIC_POWEROFF": S.STOPPED, "HOTPLUG_RESIZE": S.RUNNING,
    "HOTPLUG_SAVEAS_UNDEPLOYED": S.SHELVED, "HOTPLUG_SAVEAS_STOPPED": S.SUSPENDED,
    "BACKUP": S.RUNNING, "BACKUP_POWEROFF": S.STOPPED,
}
for _name in LCM_STATES:
    if _name.endswith("_FAILURE"):
        LCM_STATUS[_name] = S.ERROR
del S, _name

HOST_STATES = ("INIT", "MONITORING_MONITORED", "MONITORED", "ERROR", "DISABLED",
               "MONITORING_ERROR", "MONITORING_INIT", "MONITORING_DISABLED", "OFFLINE")
HOST_STATE_WORD = {"INIT": "init", "MONITORING_MONITORED": "up", "MONITORED": "up",
                   "ERROR": "error", "DISABLED": "disabled", "MONITORING_ERROR": "error",
                   "MONITORING_INIT": "init", "MONITORING_DISABLED": "disabled",
                   "OFFLINE": "offline"}


def state_names(state, lcm_state):
    """``(STATE name, LCM_STATE name)`` for the numbers OpenNebula reports."""
    state, lcm_state = int(state), int(lcm_state)
    sname = VM_STATES[state] if 0 <= state < len(VM_STATES) else f"STATE_{state}"
    lname = LCM_STATES[lcm_state] if 0 <= lcm_state < len(LCM_STATES) else f"LCM_STATE_{lcm_state}"
    return sname, lname


def state_label(state, lcm_state):
    """Human label: the LCM state for ACTIVE VMs, the VM state otherwise."""
    sname, lname = state_names(state, lcm_state)
    return lname if sname == "ACTIVE" else sname


def status_of(state, lcm_state):
    """Map OpenNebula's STATE/LCM_STATE numbers to a :class:`Status`."""
    sname, lname = state_names(state, lcm_state)
    if sname == "ACTIVE":
        return LCM_STATUS.get(lname, Status.UNKNOWN)
    return VM_STATUS.get(sname, Status.UNKNOWN)



# -- which action OpenNebula accepts in which state (DispatchManager rules) ----

def allowed(action, sname, lname):
    running = sname == "ACTIVE" and lname == "RUNNING"
    unknown = sname == "ACTIVE" and lname == "UNKNOWN"
    if action == "suspend":
        return running
    if action == "stop":
        return running or sname == "SUSPENDED"
    if action in ("poweroff", "poweroff-hard"):
        return running or unknown or (action == "poweroff-hard" and lname == "SHUTDOWN_POWEROFF")
    if action in ("undeploy", "undeploy-hard"):
        return (running or unknown or sname == "POWEROFF"
                or (action == "undeploy-hard" and lname == "SHUTDOWN_UNDEPLOY"))
    if action == "resume":
        return sname in ("STOPPED", "UNDEPLOYED", "SUSPENDED", "POWEROFF") or unknown
    if action == "migrate":
        return running or unknown or sname in ("POWEROFF", "SUSPENDED")
    if action == "resched":
        return running or unknown or sname == "POWEROFF"
    return False


ALLOWED_LABELS = {
    "suspend": ["RUNNING"],
    "stop": ["RUNNING", "SUSPENDED"],
    "poweroff": ["RUNNING", "UNKNOWN"],
    "poweroff-hard": ["RUNNING", "UNKNOWN", "SHUTDOWN_POWEROFF"],
    "undeploy": ["RUNNING", "UNKNOWN", "POWEROFF"],
    "undeploy-hard": ["RUNNING", "UNKNOWN", "POWEROFF", "SHUTDOWN_UNDEPLOY"],
    "resume": ["SUSPENDED", "STOPPED", "POWEROFF", "UNDEPLOYED", "UNKNOWN"],
    "migrate": ["RUNNING", "UNKNOWN", "SUSPENDED", "POWEROFF"],
    "resched": ["RUNNING", "UNKNOWN", "POWEROFF"],
}

