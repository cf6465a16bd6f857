"""Destructive first-install steps are planned only on facts that prove the disk new.

Each situation an operator meets on real servers (a second install, a reboot with the resources
down, the peer primary after a failover, a replaced node, a crashed first install, unreadable
metadata, a disk that already holds a filesystem) is fed to the planner as gathered facts; the
tests assert which of create-md, the forced primary, mkfs, pvcreate and vgcreate are planned.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.roles.facts import (BLKID, DrbdFacts, LvmFacts, NodeFacts, Signature, SiteFacts, parse_blkid,
                                   parse_metadata, parse_online, parse_pair, parse_pvs)
from appliance.roles.registry import plan_site
from tests.conftest import load_test_site

SITE = load_test_site()
CC01, CC02 = "cloud-cc01", "cloud-cc02"  # cc01 is the preferred node
RESOURCES = ("one-disk", "data-disk")
BLANK, EXT4, PV, UNKNOWN = Signature("none"), Signature("found", "ext4"), Signature("found", "LVM2_member"), \
    Signature("unknown")

FRESH = DrbdFacts("absent", BLANK, meta=BLANK)
RUNNING_PRIMARY = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "UpToDate", EXT4)
RUNNING_SECONDARY = DrbdFacts("used", BLANK, "Secondary", "Primary", "UpToDate", "UpToDate")
DOWN_WITH_DATA = DrbdFacts("used", BLANK)
NO_LVM = LvmFacts("read", {}, ())
VG_THERE = LvmFacts("read", {"/dev/drbd2": "one-data"}, ("one-data",))


def facts(cc01: DrbdFacts, cc02: DrbdFacts, lvm: LvmFacts = NO_LVM, **per_resource) -> SiteFacts:
    """Both resources in the same state unless given per resource (name -> (cc01, cc02)). A pair
    where either side is Primary or UpToDate runs its cluster (crm_node -l lists both)."""
    running = any(f.role == "Primary" and f.disk == "UpToDate" == f.peer_disk for f in (cc01, cc02))

    def node(name: str, default: DrbdFacts) -> NodeFacts:
        states = {r: per_resource.get(r.replace("-", "_"), (cc01, cc02))[0 if name == CC01 else 1]
                  for r in RESOURCES}
        return NodeFacts(name, states, lvm if name == CC01 else NO_LVM,
                         cluster_online=(CC01, CC02) if running else None)
    return SiteFacts({CC01: node(CC01, cc01), CC02: node(CC02, cc02)})


def destructive(site_facts: SiteFacts) -> set[tuple[str, str]]:
    """(node, what) of every destructive step planned."""
    return {(node.node, step.what) for plan in plan_site(SITE, site_facts) for node in plan.nodes
            for step in node.steps if step.destructive}


def planned(site_facts: SiteFacts) -> set[tuple[str, str]]:
    return {(node.node, step.what) for plan in plan_site(SITE, site_facts) for node in plan.nodes
            for step in node.steps if plan.role in ("drbd", "lvm")}


MKFS = (CC01, "make the ext4 filesystem on /dev/drbd1")
PVCREATE = (CC01, "create the physical volume on /dev/drbd2")
VGCREATE = (CC01, "create volume group one-data")


def primary(resource: str) -> tuple[str, str]:
    return (CC01, f"start the initial sync of {resource} from {CC01}")


def create_md(node: str, resource: str) -> tuple[str, str]:
    return (node, f"create metadata for {resource}")


def test_two_new_disks_get_the_whole_first_install():
    assert destructive(facts(FRESH, FRESH)) == {
        create_md(CC01, "one-disk"), create_md(CC01, "data-disk"), create_md(CC02, "one-disk"),
        create_md(CC02, "data-disk"), primary("one-disk"), primary("data-disk"), MKFS, PVCREATE, VGCREATE}


def test_every_destructive_step_re_reads_its_proof_before_it_runs():
    steps = [s for plan in plan_site(SITE, facts(FRESH, FRESH)) for n in plan.nodes for s in n.steps if s.destructive]
    assert steps and all(s.requires for s in steps)


def test_a_second_install_on_a_running_pair_plans_no_drbd_or_lvm_step():
    assert planned(facts(RUNNING_PRIMARY, RUNNING_SECONDARY, VG_THERE)) == set()


def test_after_a_reboot_with_both_resources_down_nothing_is_created_nor_brought_up():
    # Down is Pacemaker's business: the installer brings up only a resource it has just created.
    assert planned(facts(DOWN_WITH_DATA, DOWN_WITH_DATA)) == set()


def test_with_the_peer_primary_after_a_failover_nothing_is_planned_on_the_preferred_node():
    assert planned(facts(RUNNING_SECONDARY, RUNNING_PRIMARY)) == set()


def test_a_replaced_node_with_blank_disks_gets_metadata_but_nobody_is_forced_primary():
    result = destructive(facts(FRESH, RUNNING_PRIMARY))
    assert result == {create_md(CC01, "one-disk"), create_md(CC01, "data-disk")}


def test_metadata_that_cannot_be_read_plans_nothing_destructive():
    unreadable = DrbdFacts("unknown", BLANK, meta=BLANK)
    assert destructive(facts(unreadable, FRESH)) == {create_md(CC02, "one-disk"), create_md(CC02, "data-disk")}
    assert primary("one-disk") not in destructive(facts(unreadable, FRESH))


def test_a_disk_without_drbd_metadata_that_holds_a_filesystem_is_never_touched():
    holds_data = DrbdFacts("absent", EXT4)
    assert destructive(facts(holds_data, holds_data)) == set()
    notes = [n for p in plan_site(SITE, facts(holds_data, FRESH)) for n in p.notes]
    assert any("not proven blank" in n for n in notes)


def test_a_disk_blkid_cannot_read_is_not_proven_blank():
    assert destructive(facts(DrbdFacts("absent", UNKNOWN, meta=BLANK), DrbdFacts("absent", UNKNOWN, meta=BLANK))) \
        == set()


def test_a_metadata_disk_that_holds_anything_gets_no_metadata_written_over_it():
    # e.g. [nodes.disks] metadata names the OS disk, or /dev/sdX names moved after a disk was added
    os_disk = DrbdFacts("absent", BLANK, meta=Signature("found", "gpt"))
    assert destructive(facts(os_disk, os_disk)) == set()
    assert destructive(facts(DrbdFacts("absent", BLANK, meta=UNKNOWN), FRESH)) == {
        create_md(CC02, "one-disk"), create_md(CC02, "data-disk")}


def test_metadata_made_by_hand_over_a_disk_with_data_is_not_a_first_install():
    # "new" metadata (never primary) over a peer disk that holds ext4: a forced primary elsewhere
    # would sync over it.
    by_hand = DrbdFacts("new", EXT4, meta=BLANK)
    assert destructive(facts(FRESH, by_hand)) == {create_md(CC01, "one-disk"), create_md(CC01, "data-disk")}


def test_before_drbd_utils_and_the_res_files_exist_blank_disks_get_create_md_settled_at_apply():
    unconfigured = DrbdFacts("unconfigured", BLANK, meta=BLANK)
    planned_steps = destructive(facts(unconfigured, unconfigured))
    assert create_md(CC01, "one-disk") in planned_steps and primary("one-disk") in planned_steps
    assert destructive(facts(DrbdFacts("unconfigured", EXT4, meta=BLANK), DrbdFacts("unconfigured", EXT4,
                                                                                    meta=BLANK))) == set()


def test_one_new_side_and_one_side_with_data_is_not_a_first_install():
    # The peer was primary once (its metadata says so) even though it is down now.
    assert destructive(facts(FRESH, DOWN_WITH_DATA)) == {create_md(CC01, "one-disk"), create_md(CC01, "data-disk")}


def test_a_first_install_that_crashed_after_create_md_resumes():
    just_created = DrbdFacts("new", BLANK)
    assert destructive(facts(just_created, just_created)) == {primary("one-disk"), primary("data-disk"), MKFS,
                                                              PVCREATE, VGCREATE}


def test_a_first_install_that_crashed_after_the_forced_primary_resumes_only_on_a_blank_device():
    promoted = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "Inconsistent", BLANK)
    peer = DrbdFacts("used", BLANK, "Secondary", "Primary", "Inconsistent", "UpToDate")
    assert destructive(facts(promoted, peer)) == {MKFS, PVCREATE, VGCREATE}
    with_fs = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "UpToDate", EXT4)
    with_pv = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "UpToDate", PV)
    assert destructive(facts(with_fs, peer, one_disk=(with_fs, peer), data_disk=(with_pv, peer))) == set()


def test_a_device_whose_signature_is_unknown_gets_no_filesystem():
    promoted = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "UpToDate", UNKNOWN)
    assert destructive(facts(promoted, RUNNING_SECONDARY)) == set()


def test_a_volume_group_that_exists_is_not_created_again():
    promoted = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "UpToDate", BLANK)
    assert PVCREATE not in destructive(facts(promoted, RUNNING_SECONDARY, VG_THERE))
    assert VGCREATE not in destructive(facts(promoted, RUNNING_SECONDARY, VG_THERE))


def test_lvm_that_cannot_be_read_gets_no_pvcreate_and_no_deactivate():
    assert not {PVCREATE, VGCREATE} & destructive(facts(FRESH, FRESH, LvmFacts("unknown")))
    assert not any("deactivate" in what for _, what in planned(facts(FRESH, FRESH, LvmFacts("unknown"))))


def test_a_first_install_that_stopped_after_mkfs_still_hands_the_resources_back_before_the_cluster_runs():
    promoted = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "Inconsistent", EXT4)
    peer = DrbdFacts("used", BLANK, "Secondary", "Primary", "Inconsistent", "UpToDate")
    hand_back = {w for w in planned(facts(promoted, peer, VG_THERE)) if w[1].startswith("hand ")}
    assert hand_back == {(CC01, "hand one-disk to Pacemaker"), (CC01, "hand data-disk to Pacemaker")}
    running = SiteFacts({n: NodeFacts(n, f.drbd, f.lvm, cluster_online=(CC01, CC02))
                         for n, f in facts(promoted, peer, VG_THERE).nodes.items()})
    assert {w for w in planned(running) if w[1].startswith("hand ")} == set()


def test_a_pv_without_a_volume_group_gets_only_vgcreate():
    promoted = DrbdFacts("used", BLANK, "Primary", "Secondary", "UpToDate", "UpToDate", BLANK)
    half = LvmFacts("read", {"/dev/drbd2": ""}, ())
    assert destructive(facts(promoted, RUNNING_SECONDARY, half)) >= {VGCREATE}
    assert PVCREATE not in destructive(facts(promoted, RUNNING_SECONDARY, half))


def test_pacemaker_promoted_resources_are_never_demoted_by_install():
    hand_back = {w for w in planned(facts(RUNNING_PRIMARY, RUNNING_SECONDARY, VG_THERE)) if "hand" in w[1]}
    assert hand_back == set()


# -- the same rules, for any facts -----------------------------------------------------------------
signatures = st.sampled_from([BLANK, EXT4, PV, UNKNOWN])
drbd_facts = st.builds(DrbdFacts, metadata=st.sampled_from(["absent", "unconfigured", "new", "used", "unknown"]),
                       backing=signatures, meta=signatures,
                       role=st.sampled_from(["", "Primary", "Secondary"]),
                       peer_role=st.sampled_from(["", "Primary", "Secondary", "Unknown"]),
                       disk=st.sampled_from(["", "UpToDate", "Inconsistent", "Diskless", "Outdated"]),
                       peer_disk=st.sampled_from(["", "UpToDate", "Inconsistent", "DUnknown"]), device=signatures)
lvm_facts = st.sampled_from([NO_LVM, VG_THERE, LvmFacts("unknown"), LvmFacts("read", {"/dev/drbd2": ""}, ())])


@settings(max_examples=400, deadline=None)
@given(a1=drbd_facts, b1=drbd_facts, a2=drbd_facts, b2=drbd_facts, lvm=lvm_facts)
def test_no_destructive_step_is_ever_planned_on_a_disk_that_holds_data(a1, b1, a2, b2, lvm):
    site_facts = facts(a1, b1, lvm, one_disk=(a1, b1), data_disk=(a2, b2))
    by_resource = {"one-disk": (a1, b1), "data-disk": (a2, b2)}
    for node, what in destructive(site_facts):
        resource = next((r for r in RESOURCES if r in what), None)
        if what.startswith("create metadata"):
            f = by_resource[resource][0 if node == CC01 else 1]
            assert f.metadata in ("absent", "unconfigured") and f.backing.blank and f.meta.blank and not f.up
        elif what.startswith("start the initial sync"):
            pair = by_resource[resource]
            assert all(f.backing.blank and (f.metadata == "new" or (f.metadata in ("absent", "unconfigured")
                                                                   and f.meta.blank)) for f in pair)
            assert not any(f.role == "Primary" or "UpToDate" in (f.disk, f.peer_disk) for f in pair)
        else:  # mkfs on the cloud device, pvcreate/vgcreate on the data device: the preferred node only
            assert node == CC01
            own = by_resource["one-disk" if "filesystem" in what else "data-disk"]
            here, peer = own
            fresh = all(f.backing.blank and f.metadata in ("absent", "unconfigured", "new") for f in own) and \
                not any(f.role == "Primary" or "UpToDate" in (f.disk, f.peer_disk) for f in own)
            resumed = here.role == "Primary" and here.device.blank and peer.role != "Primary"
            assert fresh or resumed
            if "volume" in what:
                assert lvm.state == "read" and "one-data" not in lvm.volume_groups


# -- parsing what the tools print ------------------------------------------------------------------
def test_blkid_exit_2_is_the_only_proof_of_blank():
    assert parse_blkid(2, "").blank
    assert not parse_blkid(2, "", "error: /dev/sdz: No such file or directory\n").blank  # could not open
    assert parse_blkid(0, "DEVNAME=/dev/sda5\nUUID=x\nTYPE=ext4\n") == Signature("found", "ext4")
    assert parse_blkid(0, "PTTYPE=gpt\n") == Signature("found", "gpt")
    for code in (1, 4, 8, 124, 255):
        assert not parse_blkid(code, "").blank


def test_generation_identifiers_tell_new_metadata_from_used():
    assert parse_metadata(0, "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0:0\n",
                          "") == "new"
    assert parse_metadata(0, "B5C9A2F3D1E27A44:0000000000000000:9F0C7C2A1B3D5E00:0:1:1:1:0:0:0:0:0\n", "") == "used"
    # get-gi prints nothing without metadata; drbdmeta's dstate says so
    assert parse_metadata(255, "", "", (255, "", "No valid meta data found\n")) == "absent"
    assert parse_metadata(255, "", "") == "unknown"
    assert parse_metadata(127, "", "sh: 1: drbdadm: not found", (127, "", "")) == "unconfigured"
    assert parse_metadata(10, "", "'one-disk' not defined in your config (for this host).\n",
                          (10, "", "'one-disk' not defined in your config (for this host).\n")) == "unconfigured"
    # a message alone, with dstate succeeding, proves nothing
    assert parse_metadata(255, "", "", (0, "No valid meta data found\n", "")) == "unknown"
    assert parse_metadata(20, "", "Device is configured\n") == "unknown"
    assert parse_metadata(0, "garbage", "") == "unknown"


# What DRBD 8.4.11 (Debian 12's kernel) with drbd-utils 9.22's 8.4 userland printed, booted under
# QEMU with a resource on external metadata (/dev/vdc index 0): stderr carries the version warning.
WARNING = ("DRBD module version: 8.4.11\n   userland version: 9.22.0\nmixing different major numbers will not "
           "work!\n")


def test_what_drbd_8_4_prints_on_a_real_kernel_reads_as_the_right_facts():
    # no .res at all, then a .res but no metadata (get-gi says nothing, dstate says why)
    assert parse_metadata(1, "", "no resources defined!\n", (1, "", "no resources defined!\n")) == "unconfigured"
    assert parse_metadata(1, "", WARNING, (1, "", WARNING + "No valid meta data found\n")) == "absent"
    # create-md, still down; then up; then the forced primary; then down again
    just_created = "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n"
    assert parse_metadata(0, just_created, WARNING, (0, "Inconsistent\n", WARNING)) == "new"
    assert parse_pair(0, "Secondary/Unknown\n") == ("Secondary", "Unknown")
    assert parse_pair(0, "Inconsistent/DUnknown\n") == ("Inconsistent", "DUnknown")
    assert parse_pair(10, "") == ("", "")  # "Device minor not allocated" on stderr
    promoted = "AF67AAC1779F75B1:0000000000000004:0000000000000000:0000000000000000:1:1:1:0:0:0:0\n"
    assert parse_metadata(0, promoted, WARNING, (0, "UpToDate/DUnknown\n", WARNING)) == "used"
    assert parse_metadata(0, promoted, WARNING, (0, "Consistent\n", WARNING)) == "used"
    # blkid on a Secondary's /dev/drbd0 exits 2 and says why: not blank
    assert not parse_blkid(2, "", "blkid: error: /dev/drbd0: Wrong medium type\n").blank


def test_a_path_that_is_not_a_block_device_is_never_blank(tmp_path):
    # blkid itself exits 2 with a silent stderr for a path that does not exist
    import subprocess

    missing = subprocess.run(["sh", "-c", BLKID, "sh", str(tmp_path / "no-such-disk")], capture_output=True, text=True)
    assert missing.returncode == 99 and not parse_blkid(missing.returncode, missing.stdout, missing.stderr).blank
    plain_file = tmp_path / "file"
    plain_file.write_bytes(b"\0" * 4096)
    result = subprocess.run(["sh", "-c", BLKID, "sh", str(plain_file)], capture_output=True, text=True)
    assert not parse_blkid(result.returncode, result.stdout, result.stderr).blank


def test_role_and_disk_state_by_name():
    assert parse_pair(0, "Primary/Secondary\n") == ("Primary", "Secondary")
    assert parse_pair(0, "Secondary\n") == ("Secondary", "")
    assert parse_pair(10, "Unconfigured\n") == ("", "")
    assert parse_pair(0, "Unconfigured\n") == ("", "")
    assert parse_pair(3, "") == ("", "")


def test_pvs_and_membership():
    lvm = parse_pvs(0, "  /dev/drbd2|one-data\n  /dev/sda2|\n")
    assert lvm.physical_volumes == {"/dev/drbd2": "one-data", "/dev/sda2": ""} and lvm.volume_groups == ("one-data",)
    assert parse_pvs(5, "").state == "unknown"
    assert parse_online(0, "1 cloud-cc01 member\n2 cloud-cc02 lost\n") == ("cloud-cc01",)
    assert parse_online(1, "") is None


# -- an inventory edited under a pair that holds data ------------------------------------------------
def test_a_resource_with_data_pointed_at_another_disk_is_refused_before_anything_is_touched():
    import dataclasses

    import pytest

    from appliance.core.reports import ReportError

    moved = dataclasses.replace(RUNNING_PRIMARY, configured=("/dev/sdb5", "/dev/sda3", "0"))
    with pytest.raises(ReportError) as caught:
        plan_site(SITE, facts(moved, RUNNING_SECONDARY, VG_THERE, one_disk=(moved, RUNNING_SECONDARY)))
    [report] = caught.value.reports
    assert (report.code, report.host, report.value) == ("DRBD_DISK_CHANGED", CC01, "one-disk")
    assert report.payload == {"configured": ["/dev/sdb5", "/dev/sda3", "0"], "inventory": ["/dev/sda5", "/dev/sda3", "0"]}


def test_a_moved_metadata_index_is_refused_even_with_the_resource_down():
    import dataclasses

    import pytest

    from appliance.core.reports import ReportError

    down = dataclasses.replace(DOWN_WITH_DATA, configured=("/dev/sda6", "/dev/sda3", "0"))  # data-disk is index 1
    with pytest.raises(ReportError):
        plan_site(SITE, facts(DOWN_WITH_DATA, DOWN_WITH_DATA, data_disk=(DOWN_WITH_DATA, down)))


def test_the_same_disks_or_a_node_without_metadata_are_not_refused():
    import dataclasses

    same = dataclasses.replace(RUNNING_PRIMARY, configured=("/dev/sda5", "/dev/sda3", "0"))
    assert planned(facts(same, RUNNING_SECONDARY, VG_THERE, one_disk=(same, RUNNING_SECONDARY),
                         data_disk=(RUNNING_PRIMARY, RUNNING_SECONDARY))) == set()
    leftover = dataclasses.replace(FRESH, configured=("/dev/sdb5", "/dev/sda3", "0"))  # an old .res, no metadata
    assert create_md(CC01, "one-disk") in destructive(facts(leftover, FRESH))
