"""The pillar reference cannot drift: docs/policy.md and the example pillar against the validator's schema."""

import copy
import dataclasses
import pathlib
import re
import subprocess
import sys

import jinja2
import pytest
import yaml

from vcluster import policy
from vcluster.errors import PolicyError
from vcluster.policy import reference, sections
from vcluster.policy.provider_options import driver_options
from vcluster.policy.schema import REQUIRED

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "policy.md"
EXAMPLE = ROOT / "pillar" / "vcluster.sls"

#: Sections of the example pillar whose commented block shows the defaults.
DEFAULTS_SHOWN = {"reconcile", "faults", "power_save", "liveness", "suspend"}


def base():
    """A small valid policy (the value of ``vcluster:``)."""
    return {
        "cluster": "demo",
        "controller": "ctl",
        "master": "10.77.0.1",
        "pools": {"local": {"names": "vnode[001-064]", "addresses": "10.77.0.100-10.77.0.163"}},
        "providers": {"lxd": {"driver": "lxd", "network": "vcbr0", "storage_pool": "vcluster"}},
        "profiles": {"htc": {"image": "vcluster-node", "partition": "htc"}},
    }


def all_sections():
    """(section, where to put a key of it in base()) for every schema section."""
    out = [(sections.TOP, ())]
    for key in sections.TOP.values():
        if key.section is None:
            continue
        if key.name == "pools":
            out.append((key.section, ("pools", "local")))
        elif key.name == "providers":
            out.append((key.section, ("providers", "lxd")))
        elif key.name == "profiles":
            out.append((key.section, ("profiles", "htc")))
        else:
            out.append((key.section, (key.name,)))
    out.append((sections.AUTOSCALE_PROFILE, ("autoscale", "profiles", "htc")))
    return out


def render(text):
    """Render the example the way Salt does (jinja|yaml), plus the site file's controller."""
    data = yaml.safe_load(jinja2.Template(text).render(grains={}, pillar={}, salt={}))
    data["vcluster"]["controller"] = "ctl"  # /etc/vcluster/pillar/site.sls
    return data


def commented_blocks(text):
    """Commented-out YAML blocks of the example: '<indent># key:' and the deeper '<indent>#   ...' lines."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        head = re.match(r"^(\s*)# ([a-z_]+):\s*(#.*)?$", line)
        if not head:
            continue
        indent = head.group(1)
        end = i + 1
        while end < len(lines) and lines[end].startswith(indent + "#   "):
            end += 1
        blocks.append((head.group(2), i, end))
    return lines, blocks


def uncomment(lines, start, end):
    out = list(lines)
    for j in range(start, end):
        out[j] = re.sub(r"^(\s*)# ", r"\1", out[j], count=1)
    return out


# -- docs/policy.md ------------------------------------------------------------------


def test_docs_reference_is_generated_from_the_schema():
    text = DOC.read_text(encoding="utf-8")
    _head, generated, _tail = reference.split(text)
    assert generated == reference.reference(), (
        f"docs/policy.md's pillar reference differs from the validator's schema; regenerate it with: "
        f"{reference.COMMAND}"
    )


def test_update_rewrites_only_the_generated_part(tmp_path):
    doc = tmp_path / "policy.md"
    stale = f"# Hand-written\n\nintro\n\n{reference.BEGIN}\n| old | table |\n{reference.END}\n"
    doc.write_text(stale, encoding="utf-8")
    check = [sys.executable, "-m", "vcluster.policy", "--check", str(doc)]
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and reference.COMMAND in result.stderr
    subprocess.run([sys.executable, "-m", "vcluster.policy", "--update", str(doc)], check=True)
    assert doc.read_text(encoding="utf-8") == "# Hand-written\n\nintro\n\n" + reference.reference()
    assert subprocess.run(check, check=False).returncode == 0
    printed = subprocess.run([sys.executable, "-m", "vcluster.policy", "--reference"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == reference.reference()


def test_reference_names_every_key_with_type_default_and_meaning():
    text = reference.reference()
    tables = [(s, "") for s, _ in all_sections()]
    tables += [(d.options, d.driver) for d in driver_options().values()]
    tables += [(d.extra, d.driver) for d in driver_options().values()]
    for section, _driver in tables:
        heading = f"### `{section.path}`"
        assert heading in text, heading
        body = text.split(heading, 1)[1].split("\n### ", 1)[0]
        rows = [r for r in body.splitlines() if r.startswith("| `")]
        assert [re.match(r"\| `([^`]+)`", r).group(1) for r in rows] == list(section), section.path
        for key, row in zip(section.values(), rows, strict=True):
            cells = re.split(r"(?<!\\)\|", row)[1:-1]
            assert len(cells) == 4 and all(c.strip() for c in cells), row
            assert key.meaning and "\n" not in key.meaning, f"{section.path}:{key.name} needs one line of meaning"


def test_every_section_of_the_policy_is_in_the_reference():
    pol = policy.load(base())
    documented = {k.name for k in sections.TOP.values()}
    assert set(pol.as_dict()) == documented
    for name in ("reconcile", "faults", "power_save", "autoscale", "liveness", "suspend", "preemption"):
        assert f"### `vcluster:{name}`" in reference.reference()


# -- the schema is what validation uses ------------------------------------------------


@pytest.mark.parametrize("section,where", all_sections(), ids=lambda v: getattr(v, "path", None))
def test_validator_accepts_exactly_the_schema_keys(section, where):
    data = base()
    if where[:1] == ("autoscale",):
        data["autoscale"] = {"profiles": {"htc": {}}}
    target = data
    for part in where:
        target = target.setdefault(part, {})
    target["zz_not_a_key"] = 1
    with pytest.raises(PolicyError) as err:
        policy.load(data)
    accepted = set(section)
    if section is sections.PROVIDER_COMMON:
        accepted |= set(driver_options()["lxd"].options)
    assert str(err.value).endswith("accepted keys are " + ", ".join(sorted(accepted)))


@pytest.mark.parametrize("driver", sorted(driver_options()))
def test_validator_accepts_exactly_the_driver_keys(driver):
    data = base()
    data["providers"] = {"p": {"driver": driver, "zz_not_a_key": 1}}
    with pytest.raises(PolicyError) as err:
        policy.load(data)
    accepted = set(driver_options()[driver].options) | {"driver"}
    assert str(err.value).endswith("accepted keys are " + ", ".join(sorted(accepted)))
    data = base()
    data["profiles"]["htc"]["extra"] = {"zz_not_a_key": 1}
    if driver != "lxd":
        required = {"openstack": {"cloud": "c"}, "opennebula": {"endpoint": "https://one:2633/RPC2"},
                    "libvirt": {"network": "n", "storage_pool": "p"}}
        data["providers"] = {"p": dict(required[driver], driver=driver)}
        data["profiles"]["htc"]["flavor"] = "m1.small"
    with pytest.raises(PolicyError) as err:
        policy.load(data)
    assert str(err.value).endswith("accepted keys are " + ", ".join(sorted(driver_options()[driver].extra)))


@pytest.mark.parametrize("name", ["reconcile", "faults", "power_save", "liveness", "suspend", "preemption",
                                  "autoscale", "limits"])
def test_unset_section_takes_the_schema_defaults(name):
    pol = policy.load(base())
    loaded = dataclasses.asdict(getattr(pol, name))
    for key in sections.TOP[name].section.values():
        if key.shown_default is not None:  # computed from other keys
            continue
        expected = key.default
        assert expected is not REQUIRED
        got = loaded[key.name]
        if isinstance(expected, tuple):
            got = tuple(got)
        assert got == expected, f"vcluster:{name}:{key.name}"


def test_profile_defaults_come_from_the_schema():
    data = base()
    pol = policy.load(data)
    prof = pol.profiles["htc"]
    for key in sections.PROFILE.values():
        if key.name not in data["profiles"]["htc"] and key.shown_default is None:
            assert key.default is not REQUIRED
            assert getattr(prof, key.name) == key.default, key.name


# -- the example pillar ---------------------------------------------------------------


def test_example_validates():
    """The example as Salt renders it (jinja|yaml) is a valid policy (tests/unit/test_policy.py checks its values)."""
    pol = policy.load(render(EXAMPLE.read_text(encoding="utf-8")))
    assert sorted(pol.profiles) == ["htc", "mem"] and pol.providers["lxd"].driver == "lxd"


#: The example's commented provider blocks: name -> driver.
PROVIDER_EXAMPLES = {"nova": "openstack", "virt": "libvirt"}


def test_example_commented_blocks_validate_and_show_the_defaults():
    text = EXAMPLE.read_text(encoding="utf-8")
    lines, blocks = commented_blocks(text)
    names = [name for name, _, _ in blocks]
    for section in ("reconcile", "faults", "power_save", "autoscale", "liveness", "suspend", "preemption", *PROVIDER_EXAMPLES):
        assert section in names, f"the example has no commented {section}: block"
    default_pol = policy.load(render(text))
    for name, start, end in blocks:
        data = render("\n".join(uncomment(lines, start, end)) + "\n")
        pol = policy.load(data)
        if name in DEFAULTS_SHOWN:
            assert data["vcluster"][name], name
            assert getattr(pol, name) == getattr(default_pol, name), f"the example's {name}: block is not the defaults"
        elif name in PROVIDER_EXAMPLES:
            assert pol.providers[name].driver == PROVIDER_EXAMPLES[name]
        else:
            assert getattr(pol, name) != getattr(default_pol, name), name


def test_example_with_every_block_uncommented_validates():
    text = EXAMPLE.read_text(encoding="utf-8")
    lines, blocks = commented_blocks(text)
    for _name, start, end in blocks:
        lines = uncomment(lines, start, end)
    data = render("\n".join(lines) + "\n")
    pol = policy.load(copy.deepcopy(data))
    assert pol.autoscale.enabled and pol.autoscale.profiles["htc"].warm_pool == 2
    assert pol.preemption.partitions == ("batch",)
