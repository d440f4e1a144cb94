"""Write the Slurm fixtures of releases that do not run here, from SchedMD's schemas.

Usage (no root, no Slurm needed; run after a 24.11 capture)::

    python -m tests.harness.schema_fixtures /path/to/slurm/source tests/unit/data/slurm

Only 22.05 (Debian 12) and 24.11 (Debian 13 chroot) run on this machine; their
output is captured by :mod:`tests.harness.capture_slurm`. For 23.02, 23.11,
24.05, 25.05 and 25.11 this script rewrites the real 24.11 capture into each
release's shape, as read in SchedMD's source (``git`` checkout of
SchedMD/slurm with its release tags) at the tag named in :data:`TARGETS`:

* ``squeue --json`` job records keep only the keys of that release's
  ``PARSER_ARRAY(JOB_INFO)`` (src/plugins/data_parser/v0.0.NN/parsers.c);
  keys the release has and 24.11 lacks get the empty value of their parser
  type. ``job_state`` is one word (``job_state_string()``) where the parser
  is ``JOB_STATE`` of v0.0.39, a list from v0.0.40.
* The document's top level and ``meta`` follow ``data_parser_dump_cli_stdout``
  (23.02: ``meta.plugins``, ``meta.Slurm`` with numbers, no
  ``last_backfill``/``last_update``) or ``OPENAPI_META`` (23.11+: strings).
* ``squeue --json`` before 24.05 does not apply squeue's filters
  (``squeue_filter_jobs_for_json`` arrived in 24.05): the finished jobs
  (COMPLETED, FAILED) are listed there, written from the 24.11 scontrol
  records of those jobs, and ``--states=PENDING`` lists every job.
* ``sinfo --json`` groups keep the keys of ``PARSER_ARRAY(SINFO_DATA)``
  (``resource_spec`` from v0.0.42).
* ``scontrol show -o``: ``Version=`` set; node lines of 23.02/23.11 carry
  ``CapWatts``/``ExtSensors*`` (src/api/node_info.c until 24.05), job
  lines ``Power=`` (src/api/job_info.c until 24.05), partition lines no
  ``ExclusiveTopo=`` (from 24.05).

Every file says what it is in meta.json (``"source": "written-from-schema"``).
"""

import argparse
import copy
import json
import os
import re
import subprocess

#: release series -> (tag in SchedMD/slurm, version printed, data_parser)
TARGETS = {
    "23.02": ("slurm-23-02-7-1", "23.02.7", "v0.0.39"),
    "23.11": ("slurm-23-11-10-1", "23.11.10", "v0.0.40"),
    "24.05": ("slurm-24-05-8-1", "24.05.8", "v0.0.41"),
    "25.05": ("slurm-25-05-8-1", "25.05.8", "v0.0.43"),
    "25.11": ("slurm-25-11-7-1", "25.11.7", "v0.0.44"),
}

BASE = "24.11"
FINISHED = ("completed", "failed")


def _git_show(src, tag, path):
    return subprocess.run(["git", "-C", src, "show", f"{tag}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def parser_fields(src, tag, data_parser, name):
    """``{top-level key: parser type}`` of ``PARSER_ARRAY(name)`` at ``tag``."""
    code = _git_show(src, tag, f"src/plugins/data_parser/{data_parser}/parsers.c")
    match = re.search(r"PARSER_ARRAY\(%s\)\[\] = \{(.*?)\n\};" % re.escape(name), code, re.S)
    if not match:
        raise RuntimeError(f"no PARSER_ARRAY({name}) in {data_parser} at {tag}")
    fields = {}
    for line in match.group(1).splitlines():
        m = re.search(r'add_(?:parse|parse_req|parse_overload|cparse)\((\w+),[^"]*"([^"]+)"', line)
        if m:
            fields.setdefault(m.group(2).split("/")[0], m.group(1))
            continue
        m = re.search(r'add_parse_bit_flag_array\(\w+, (\w+),[^"]*"([^"]+)"', line)
        if m:
            fields.setdefault(m.group(2).split("/")[0], "FLAG_ARRAY")
            continue
        m = re.search(r'add_skip\(|add_removed', line)
        if m:
            continue
        m = re.search(r'add_\w+\(.*?"([a-z_][a-z0-9_/]*)"', line)
        if m:
            fields.setdefault(m.group(1).split("/")[0], "OTHER")
    return fields


def _empty(kind):
    if kind.endswith("_NO_VAL") or kind.endswith("NO_VAL_STRUCT"):
        return {"set": False, "infinite": False, "number": 0}
    if kind in ("STRING", "HOSTLIST", "JOB_REASON", "USER_ID", "GROUP_ID", "QOS_NAME"):
        return ""
    if kind in ("BOOL", "BOOL16", "BOOL16_NO_VAL"):
        return False
    if kind.startswith(("UINT", "INT", "FLOAT")):
        return 0
    if kind == "FLAG_ARRAY" or kind.endswith("_LIST") or kind.endswith("_FLAGS"):
        return []
    return None


#: job_state_string(): a flag wins over the base state (src/common/slurm_protocol_defs.c)
_FLAG_ORDER = ("COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED", "REQUEUE_FED",
               "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING")


def _job_state_string(words):
    for flag in _FLAG_ORDER:
        if flag in words:
            return flag
    return words[0]


def _meta(base_meta, series, version, data_parser, command):
    major, minor, micro = version.split(".")
    if series == "23.02":
        return {"plugins": {"data_parser": f"data_parser/{data_parser}",
                            "accounting_storage": "accounting_storage/none"},
                "command": command,
                "Slurm": {"version": {"major": int(major), "micro": int(micro), "minor": int(minor)},
                          "release": version}}
    meta = copy.deepcopy(base_meta)
    meta["plugin"]["data_parser"] = f"data_parser/{data_parser}"
    meta["slurm"]["version"] = {"major": major, "micro": micro, "minor": minor}
    meta["slurm"]["release"] = version
    meta["command"] = command
    return meta


def _scontrol_records(text):
    return {int(re.match(r"JobId=(\d+)", line).group(1)): line
            for line in text.splitlines() if line.startswith("JobId=")}


def _finished_job(template, record, fields):
    """A squeue record for a finished job, from a running one's and its scontrol line."""
    job = copy.deepcopy(template)
    get = dict(re.findall(r"(?:^|\s)(JobId|JobName|JobState|Reason|NodeList|Priority)=(\S+)", record))
    job["job_id"] = int(get["JobId"])
    job["name"] = get["JobName"]
    job["job_state"] = [get["JobState"]]
    job["state_reason"] = get["Reason"]
    job["nodes"] = get["NodeList"]
    job["priority"] = {"set": True, "infinite": False, "number": int(get["Priority"])}
    return {k: v for k, v in job.items() if k in fields}


def convert_squeue(doc, series, version, data_parser, fields, finished=()):
    """The 24.11 ``squeue --json`` document ``doc`` as ``series`` prints it."""
    jobs = []
    for job in doc["jobs"] + list(finished):
        out = {}
        for key, kind in fields.items():
            out[key] = copy.deepcopy(job[key]) if key in job else _empty(kind)
        if series == "23.02":
            out["job_state"] = _job_state_string(job["job_state"])
        jobs.append(out)
    jobs.sort(key=lambda j: j["job_id"])
    meta = _meta(doc["meta"], series, version, data_parser, doc["meta"].get("command", ["squeue"]))
    if series == "23.02":
        return {"meta": meta, "errors": doc["errors"], "warnings": doc["warnings"], "jobs": jobs}
    return {"jobs": jobs, "last_backfill": doc["last_backfill"], "last_update": doc["last_update"],
            "meta": meta, "errors": doc["errors"], "warnings": doc["warnings"]}


def convert_sinfo(doc, series, version, data_parser, fields):
    groups = [{k: copy.deepcopy(v) for k, v in g.items() if k in fields} for g in doc["sinfo"]]
    meta = _meta(doc["meta"], series, version, data_parser, doc["meta"].get("command", ["sinfo"]))
    if series == "23.02":
        return {"meta": meta, "errors": doc["errors"], "warnings": doc["warnings"], "sinfo": groups}
    return {"sinfo": groups, "meta": meta, "errors": doc["errors"], "warnings": doc["warnings"]}


def convert_scontrol(text, series, version):
    text = re.sub(r"\bVersion=\d+\.\d+\.\d+", f"Version={version}", text)
    if series in ("23.02", "23.11"):
        text = text.replace(" CurrentWatts=0 AveWatts=0 ",
                            " CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s "
                            "ExtSensorsWatts=0 ExtSensorsTemp=n/s")
        text = "\n".join(line + "Power= " if line.startswith("JobId=") else line
                         for line in text.split("\n"))
        text = re.sub(r" ExclusiveTopo=\S+", "", text)  # src/api/partition_info.c from 24.05
    return text


def _dump(path, data):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def write(src, data_dir):
    """Write every release of :data:`TARGETS` under ``data_dir`` from ``data_dir``/24.11."""
    base = os.path.join(data_dir, BASE)
    meta = json.loads(_read(os.path.join(base, "meta.json")))
    scontrol_jobs = _scontrol_records(_read(os.path.join(base, "scontrol_show_job.txt")))
    full = json.loads(_read(os.path.join(base, "squeue.json")))
    template = next(j for j in full["jobs"] if j["job_id"] == meta["jobs"]["running"])
    for series, (tag, version, data_parser) in TARGETS.items():
        out = os.path.join(data_dir, series)
        os.makedirs(out, exist_ok=True)
        job_fields = parser_fields(src, tag, data_parser, "JOB_INFO")
        sinfo_fields = parser_fields(src, tag, data_parser, "SINFO_DATA")
        filters = series >= "24.05"
        for name in ("squeue.json", "squeue_empty.json", "squeue_pending.json"):
            doc = json.loads(_read(os.path.join(base, name)))
            finished = []
            if not filters and name != "squeue_empty.json":
                finished = [_finished_job(template, scontrol_jobs[meta["jobs"][k]], job_fields) for k in FINISHED]
                if name == "squeue_pending.json":  # not filtered before 24.05: every job
                    doc = copy.deepcopy(full)
            _dump(os.path.join(out, name), convert_squeue(doc, series, version, data_parser, job_fields, finished))
        for name in ("sinfo.json", "sinfo_empty.json"):
            doc = json.loads(_read(os.path.join(base, name)))
            _dump(os.path.join(out, name), convert_sinfo(doc, series, version, data_parser, sinfo_fields))
        for name in ("scontrol_show_node.txt", "scontrol_show_node_future.txt", "scontrol_show_job.txt",
                     "scontrol_show_partition.txt"):
            with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
                fh.write(convert_scontrol(_read(os.path.join(base, name)), series, version))
        with open(os.path.join(out, "scontrol_version.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"slurm {version}\n")
        _dump(os.path.join(out, "meta.json"), {
            "version": f"slurm {version}", "source": "written-from-schema", "based_on": f"{BASE} capture",
            "data_parser": data_parser, "schema": f"SchedMD/slurm {tag}", "jobs": meta["jobs"]})


def main(argv=None):
    parser = argparse.ArgumentParser(description="write Slurm fixtures of releases that do not run here")
    parser.add_argument("source", help="a git checkout of SchedMD/slurm with its release tags")
    parser.add_argument("out", nargs="?", default="tests/unit/data/slurm")
    args = parser.parse_args(argv)
    write(args.source, args.out)


if __name__ == "__main__":
    main()
