"""Set up the testbed's Keystone in one process, before its API starts.

``keystone_setup.py TESTBED_DIR``: database schema, fernet and credential key
repositories, the admin bootstrap (admin user, project, roles, identity
endpoints), then the projects ``service`` and ``vcluster``, the service users
(nova, placement, glance, neutron: roles admin and service in project
service), the user ``vcluster`` (roles admin and member in project vcluster)
and the catalog for compute, placement, image and network.

Going through Keystone's own library instead of its REST API saves a few
dozen authenticated HTTP round trips and three interpreter start-ups.
Passwords come from TESTBED_DIR/secrets.env and are never printed.
"""

import base64
import os
import sys
import uuid

KS = "http://127.0.0.1:5000/v3/"
REGION = "RegionOne"
CATALOG = {
    # service type: (name, url)
    "compute": ("nova", "http://127.0.0.1:8774/v2.1"),
    "placement": ("placement", "http://127.0.0.1:8778"),
    "image": ("glance", "http://127.0.0.1:9292"),
    "network": ("neutron", "http://127.0.0.1:9696"),
}
SERVICE_USERS = ("nova", "placement", "glance", "neutron")


def secrets(tb):
    with open(os.path.join(tb, "secrets.env")) as fh:
        return dict(line.strip().split("=", 1) for line in fh if "=" in line)


def key_repository(path):
    """Fernet key repository: file 0 (staged key) and 1 (primary key)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in ("0", "1"):
        key = os.path.join(path, name)
        if not os.path.exists(key):
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.urlsafe_b64encode(os.urandom(32)).decode())


def main(tb):
    sec = secrets(tb)
    conf_file = os.path.join(tb, "etc", "keystone", "keystone.conf")

    import keystone.conf
    from keystone import exception
    from keystone.cmd import bootstrap
    from keystone.common import provider_api, sql
    from keystone.common.sql import upgrades

    conf = keystone.conf.CONF
    keystone.conf.configure()
    sql.initialize()
    keystone.conf.set_default_for_default_log_levels()
    conf(args=["--config-file", conf_file], project="keystone")
    keystone.conf.setup_logging()

    upgrades.offline_sync_database_to_version()
    key_repository(conf.fernet_tokens.key_repository)
    key_repository(conf.credential.key_repository)

    boot = bootstrap.Bootstrapper()
    boot.admin_username = "admin"
    boot.admin_password = sec["ADMIN_PASSWORD"]
    boot.project_name = "admin"
    boot.admin_role_name = "admin"
    boot.service_name = "keystone"
    boot.region_id = REGION
    boot.public_url = boot.internal_url = boot.admin_url = KS
    boot.bootstrap()

    api = provider_api.ProviderAPIs
    domain = boot.default_domain_id
    roles = {role["name"]: role["id"] for role in api.role_api.list_roles()}

    def project(name):
        try:
            return api.resource_api.get_project_by_name(name, domain)["id"]
        except exception.ProjectNotFound:
            pid = uuid.uuid4().hex
            api.resource_api.create_project(pid, {
                "id": pid, "name": name, "domain_id": domain, "enabled": True,
                "description": f"testbed project {name}"})
            return pid

    def user(name, password, project_id, role_names):
        try:
            uid = api.identity_api.get_user_by_name(name, domain)["id"]
        except exception.UserNotFound:
            uid = api.identity_api.create_user(user_ref={
                "name": name, "enabled": True, "domain_id": domain, "password": password,
                "default_project_id": project_id})["id"]
        for role in role_names:
            try:
                api.assignment_api.add_role_to_user_and_project(uid, project_id, roles[role])
            except exception.Conflict:
                pass

    service_project = project("service")
    for name in SERVICE_USERS:
        user(name, sec["SERVICE_PASSWORD"], service_project, ("admin", "service"))
    user("vcluster", sec["USER_PASSWORD"], project("vcluster"), ("admin", "member"))

    existing = {svc["type"] for svc in api.catalog_api.list_services()}
    for stype, (name, url) in CATALOG.items():
        if stype in existing:
            continue
        sid = uuid.uuid4().hex
        api.catalog_api.create_service(sid, {"id": sid, "name": name, "type": stype, "enabled": True})
        for interface in ("public", "internal"):
            eid = uuid.uuid4().hex
            api.catalog_api.create_endpoint(eid, {
                "id": eid, "interface": interface, "url": url, "service_id": sid,
                "region_id": REGION, "enabled": True})


if __name__ == "__main__":
    main(sys.argv[1])
