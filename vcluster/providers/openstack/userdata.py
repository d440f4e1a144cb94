"""User data of Nova servers: one cloud-config per node, a multi-part archive per batch.

Each node's part is :func:`vcluster.bootstrap.cloud_config` (the one
cloud-config writer) with its hostname and launch index; a batch of a
multi-create carries every part, and cloud-init applies only the part of
the instance's own launch index.
"""

import base64
import email
import email.mime.multipart
import email.mime.text
import gzip

import yaml

from vcluster import bootstrap

USER_DATA_LIMIT = 65535  # Nova's limit on the base64 text of user_data
DEFAULT_MINION_START = (
    "systemctl enable --now salt-minion 2>/dev/null || service salt-minion start || salt-minion -d"
)


def cloud_config(spec, launch_index=None, minion_start=DEFAULT_MINION_START):
    """The ``#cloud-config`` text for one spec: hostname, boot files, the profile's ``runcmd``, minion start."""
    return bootstrap.cloud_config(spec.boot_files, hostname=spec.name, launch_index=launch_index,
                                  runcmd=spec.extra.get("runcmd", []), start_command=minion_start)


def batch_user_data(specs, minion_start=DEFAULT_MINION_START, texts=None):
    """User data bytes for a batch: a single cloud-config, or a multi-part archive by launch index.

    The archive is gzip-compressed (cloud-init detects it) when that is what
    makes it fit Nova's limit. ``texts`` may give the parts'
    :func:`cloud_config` texts already made (``texts[i]`` for launch index
    ``i``).
    """
    if len(specs) == 1:
        return (texts[0] if texts else cloud_config(specs[0], minion_start=minion_start)).encode()
    archive = email.mime.multipart.MIMEMultipart("mixed")
    for index, spec in enumerate(specs):
        text = texts[index] if texts else cloud_config(spec, index, minion_start)
        charset = "us-ascii" if text.isascii() else "utf-8"  # us-ascii parts stay readable (7bit)
        part = email.mime.text.MIMEText(text, "cloud-config", charset)
        part.add_header("Launch-Index", str(index))
        part.add_header("Content-Disposition", "attachment", filename=f"{spec.name}.cfg")
        archive.attach(part)
    raw = archive.as_bytes()
    if encoded_size(raw) > USER_DATA_LIMIT:
        packed = gzip.compress(raw, mtime=0)
        if encoded_size(packed) < encoded_size(raw):
            return packed
    return raw


def encoded_size(data):
    return 4 * ((len(data) + 2) // 3)


def parse_user_data(data):
    """Inverse of :func:`batch_user_data` for tests and debugging: [(launch_index, cloud-config dict)]."""
    if isinstance(data, str):
        data = base64.b64decode(data)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data.startswith(b"#cloud-config"):
        return [(None, yaml.safe_load(data.decode()))]
    msg = email.message_from_bytes(data)
    parts = []
    for part in msg.get_payload():
        text = part.get_payload(decode=True).decode()
        index = part.get("Launch-Index")
        parts.append((int(index) if index is not None else None, yaml.safe_load(text)))
    return parts
