"""A salt-master's configuration read the way ``salt-master`` reads it, with where each key comes from.

The steps of :func:`salt.config.master_config`, one by one
(:func:`salt.config.load_config`, :func:`salt.config.include_config`,
:func:`salt.config.apply_master_config`), so that :mod:`vcluster.masterconf`
knows which file sets each key and can read a candidate file in the place
of the one it would write.
"""

import copy
import fnmatch
import glob
import os

#: Keys Salt's loader adds to what it read; no site setting.
_BOOKKEEPING = ("conf_file",)


# -- reading a master's configuration the way salt-master does ---------------------


def _defaults():
    import salt.config  # pylint: disable=import-outside-toplevel

    return copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)


def _pattern_paths(patterns, orig_path):
    """Absolute glob patterns, resolved as :func:`salt.config.include_config` does."""
    if not patterns:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(orig_path), pattern)
        out.append(pattern)
    return out


def _files(patterns, orig_path, target=None, candidate=None):
    """The files each pattern includes, in Salt's order.

    ``target`` is left out (it is the file being written); with ``candidate``
    it is read from there instead, at the place Salt would read ``target``.
    """
    files = []
    for pattern in _pattern_paths(patterns, orig_path):
        matches = {os.path.abspath(p) for p in glob.glob(pattern)}
        if target:
            matches.discard(target)
            if candidate and fnmatch.fnmatch(target, pattern):
                matches.add(target)
        for path in sorted(matches):
            files.append(candidate if path == target and candidate else path)
    return files


def _include(files, orig_path):
    import salt.config  # pylint: disable=import-outside-toplevel

    # One explicit path per "pattern": Salt reads them in this order and
    # merges them among themselves (dicts by key, lists by item).
    return salt.config.include_config(files, orig_path, verbose=False) if files else {}


def read(master_file, target=None, candidate=None):
    """What Salt would read for ``master_file``: ``(overrides, opts, sources)``.

    ``overrides`` are the settings the files make (before Salt's defaults),
    ``opts`` the effective master options, ``sources`` maps each key to the
    files that set it. ``target`` is left out of the reading, or read from
    ``candidate`` where Salt would read it.
    """
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.data  # pylint: disable=import-outside-toplevel

    master_file = os.path.abspath(master_file)
    target = os.path.abspath(target) if target else None
    defaults = _defaults()
    main = salt.config.load_config(master_file, "SALT_MASTER_CONFIG", defaults["conf_file"])
    stages = [(main, {master_file: main})]
    for patterns in (main.get("default_include", defaults["default_include"]), main.get("include", [])):
        files = _files(patterns, master_file, target, candidate)
        stages.append((_include(files, master_file), {f: _include([f], master_file) for f in files}))
    overrides = {}
    sources = {}
    for settings, per_file in stages:
        # master_config(): each stage replaces the keys of the one before
        overrides.update(settings)
        for key in settings:
            names = [f for f, conf in per_file.items() if key in conf]
            sources[key] = [target if f == candidate else f for f in names]
    for key in _BOOKKEEPING:
        overrides.pop(key, None)
    opts = salt.config.apply_master_config(copy.deepcopy(overrides), defaults)
    if opts.get("nodegroups") is None:
        opts["nodegroups"] = {}
    if salt.utils.data.is_dictlist(opts["nodegroups"]):
        opts["nodegroups"] = salt.utils.data.repack_dictlist(opts["nodegroups"])
    return overrides, dict(opts), sources
