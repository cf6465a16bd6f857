"""Property: any input gives an inventory or coded reports, never an exception."""
from __future__ import annotations

import copy
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.inventory.checks import check_inventory
from appliance.inventory.load import parse_inventory, read_inventory
from appliance.core.reports import CATALOGUE
from tests.conftest import EXAMPLE

EXAMPLE_DATA = tomllib.loads(EXAMPLE.read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
                    st.floats(allow_nan=True), st.text(max_size=40),
                    st.sampled_from(["10.0.0.1", "cloud-cc01", "/dev/sda3", "eth0", "999.1.1.1", "/x/../y",
                                     "a\nb", "$(id)", "", "C", "9"]))
toml_values = st.recursive(scalars.filter(lambda v: v is not None),
                           lambda children: st.one_of(st.lists(children, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), children, max_size=4)),
                           max_leaves=20)


def assert_coded(inventory, reports):
    assert inventory is not None or reports
    for report in reports:
        assert report.code in CATALOGUE
        report.as_dict()  # must serialise whatever the input was
        report.render()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_as_a_file(tmp_path, data):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    assert_coded(*read_inventory(path))


@settings(max_examples=300, deadline=None)
@given(toml_values)
def test_any_toml_shaped_data(data):
    assert_coded(*parse_inventory(data))


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


EXAMPLE_PATHS = [p for p in paths(EXAMPLE_DATA) if p]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), toml_values), min_size=1, max_size=3))
def test_mutated_example(mutations):
    data = copy.deepcopy(EXAMPLE_DATA)
    for path, value in mutations:
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    inventory, reports = parse_inventory(data)
    assert_coded(inventory, reports)
    if inventory is not None:
        # A structurally valid inventory must also survive every cross-field check.
        assert_coded(inventory, check_inventory(inventory))
