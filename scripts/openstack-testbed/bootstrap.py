"""Finish the testbed through its REST APIs (run by up.sh in the OpenStack venv).

``bootstrap.py TESTBED_DIR`` waits until Nova lists both compute hosts and
Placement holds their inventories, then creates the flavors, uploads the tiny
``vcluster-node`` image, raises the quotas of project ``vcluster``, and writes
``clouds.yaml`` with the clouds ``vcluster-testbed`` (user ``vcluster``, admin
role in project ``vcluster``) and ``vcluster-testbed-admin`` (Keystone's
bootstrap admin). Keystone itself was set up by keystone_setup.py.

Every step looks before it creates, so a second run changes nothing.
Passwords come from ``TESTBED_DIR/secrets.env`` (written by up.sh, mode 0600)
and are never printed.
"""

import io
import os
import sys
import time

import openstack

AUTH_URL = "http://127.0.0.1:5000/v3"
REGION = "RegionOne"
# name: (ram MiB, vcpus, disk GiB). "m1.toobig" asks for more memory than a
# fake compute host has (800000 MiB), so the scheduler finds no valid host.
FLAVORS = {
    "m1.tiny": (64, 1, 1),
    "m1.small": (512, 1, 1),
    "m1.medium": (2048, 2, 1),
    "m1.large": (4096, 4, 1),
    "m1.toobig": (1000000, 1, 1),
}
IMAGE = "vcluster-node"
QUOTAS = {
    "instances": 500, "cores": -1, "ram": -1, "metadata_items": 128,
    "server_groups": -1, "server_group_members": -1, "key_pairs": -1,
}


def secrets(tb):
    values = {}
    with open(os.path.join(tb, "secrets.env")) as fh:
        for line in fh:
            if "=" in line:
                key, value = line.strip().split("=", 1)
                values[key] = value
    return values


def auth(username, password, project):
    return {
        "auth_url": AUTH_URL, "username": username, "password": password,
        "project_name": project, "user_domain_name": "Default", "project_domain_name": "Default",
    }


def connect(sec):
    return openstack.connect(
        auth=auth("admin", sec["ADMIN_PASSWORD"], "admin"), region_name=REGION, identity_api_version="3"
    )


def wait_for_computes(conn, hosts=2, limit=120):
    """Poll until Nova lists both hypervisors up and Placement has their inventories."""
    end = time.monotonic() + limit
    while True:
        try:
            hyps = [h for h in conn.compute.hypervisors() if h.state == "up"]
            rps = list(conn.placement.resource_providers())
            ready = [rp for rp in rps if conn.placement.get(
                f"/resource_providers/{rp.id}/inventories").json().get("inventories", {}).get("VCPU")]
            if len(hyps) >= hosts and len(ready) >= hosts:
                return
        except openstack.exceptions.SDKException:
            pass
        if time.monotonic() > end:
            raise SystemExit(f"the {hosts} compute hosts did not show up in Nova and Placement within {limit} s")
        time.sleep(0.2)


def compute(conn, sec, tb):
    wait_for_computes(conn)
    for name, (ram, vcpus, disk) in FLAVORS.items():
        if conn.compute.find_flavor(name) is None:
            conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk, is_public=True)
    if conn.image.find_image(IMAGE) is None:
        # 1 MiB of zeros: the fake virt driver never reads it.
        conn.image.create_image(
            name=IMAGE, data=io.BytesIO(b"\0" * (1 << 20)), disk_format="raw", container_format="bare",
            visibility="public", validate_checksum=False,
        )
    project = conn.identity.find_project("vcluster")
    conn.set_compute_quotas(project.id, **QUOTAS)
    path = os.path.join(tb, "clouds.yaml")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by scripts/openstack-testbed/up.sh; the testbed's own throwaway passwords.\n")
        fh.write("clouds:\n")
        for cloud, (user, password, proj) in {
            "vcluster-testbed": ("vcluster", sec["USER_PASSWORD"], "vcluster"),
            "vcluster-testbed-admin": ("admin", sec["ADMIN_PASSWORD"], "admin"),
        }.items():
            fh.write(f"  {cloud}:\n    region_name: {REGION}\n    identity_api_version: 3\n"
                     "    interface: public\n    auth:\n")
            for key, value in auth(user, password, proj).items():
                fh.write(f"      {key}: '{value}'\n")
    os.replace(path + ".tmp", path)


def main(argv):
    tb = argv[1]
    sec = secrets(tb)
    conn = connect(sec)
    compute(conn, sec, tb)
    conn.close()


if __name__ == "__main__":
    main(sys.argv)
