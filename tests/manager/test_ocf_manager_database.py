"""ocf:appliance:manager and the node's own MariaDB (a real server): semi-sync around a takeover.

Pacemaker's membership comes from a stand-in `crm_node` on PATH; the lab's kill-node drill runs the
same code against the real one (bench/failover.py measures what it saves).
"""
from __future__ import annotations

import pymysql
import pytest

from appliance.ha import ocf_manager


@pytest.fixture
def local_db(mariadb, tmp_path, monkeypatch):
    config = tmp_path / "manager.toml"
    config.write_text('[database]\nbackend = "mysql"\n[api]\nport = 2633\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    members = tmp_path / "members"
    crm_node = bin_dir / "crm_node"
    crm_node.write_text(f'#!/bin/sh\n[ "$1" = "-p" ] && cat {members}\n')
    crm_node.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin")
    monkeypatch.setenv("OCF_RESKEY_config", str(config))
    monkeypatch.setenv("OCF_RESKEY_database_socket", mariadb.socket)
    monkeypatch.setattr(ocf_manager, "SEMISYNC_SUSPENDED", tmp_path / "semisync-suspended")
    connection = pymysql.connect(unix_socket=mariadb.socket, user="root", password="", autocommit=True)

    def variable() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@GLOBAL.rpl_semi_sync_master_enabled")
            return str(cursor.fetchone()[0])

    def set_variable(on: bool) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"SET GLOBAL rpl_semi_sync_master_enabled = {'ON' if on else 'OFF'}")

    yield members, variable, set_variable, tmp_path / "semisync-suspended"
    set_variable(False)
    connection.close()


def test_a_takeover_without_the_peer_stops_waiting_for_it_until_its_replica_is_back(local_db):
    members, variable, set_variable, marker = local_db
    set_variable(True)
    members.write_text("cloud-cc02\n")  # the peer has left the partition: it was fenced
    ocf_manager._suspend_semisync_if_alone()
    assert variable() == "0" and marker.exists()
    members.write_text("cloud-cc01 cloud-cc02\n")  # back in the cluster, but no replica registered yet
    ocf_manager._resume_semisync_when_peer_replicates()
    assert variable() == "0" and marker.exists()


def test_with_the_peer_present_semi_sync_is_left_alone(local_db):
    members, variable, set_variable, marker = local_db
    set_variable(True)
    members.write_text("cloud-cc01 cloud-cc02\n")
    ocf_manager._suspend_semisync_if_alone()
    assert variable() == "1" and not marker.exists()


def test_semi_sync_switched_off_by_configuration_is_never_switched_on(local_db):
    members, variable, set_variable, marker = local_db
    members.write_text("cloud-cc02\n")
    ocf_manager._suspend_semisync_if_alone()
    ocf_manager._resume_semisync_when_peer_replicates()
    assert variable() == "0" and not marker.exists()


def test_read_only_follows_the_manager(local_db):
    ocf_manager._local_database_read_only(True)
    assert ocf_manager._sql("SELECT @@GLOBAL.read_only").strip() == "1"
    ocf_manager._local_database_read_only(False)
    assert ocf_manager._sql("SELECT @@GLOBAL.read_only").strip() == "0"


def test_the_replica_columns_the_agent_reads_are_the_ones_mariadb_shows(local_db, tmp_path, monkeypatch):
    """The retry after a gap reads SHOW SLAVE STATUS by column name: check those names on a real
    server, with a replica configured and stopped (no retry: its error is not the gap)."""
    monkeypatch.setattr(ocf_manager, "REPLICA_RETRIED", tmp_path / "replica-retried")
    assert ocf_manager.parse_rows(ocf_manager._sql("SHOW SLAVE STATUS", names=True)) == []  # not a replica
    ocf_manager._sql("CHANGE MASTER TO MASTER_HOST='192.0.2.1', MASTER_PORT=3306, MASTER_USER='repl', "
                     "MASTER_CONNECT_RETRY=60, MASTER_USE_GTID=slave_pos")
    try:
        rows = ocf_manager.parse_rows(ocf_manager._sql("SHOW SLAVE STATUS", names=True))
        assert len(rows) == 1
        row = rows[0]
        assert row["Master_Host"] == "192.0.2.1" and row["Slave_IO_Running"] == "No"
        assert {"Last_IO_Errno", "Last_IO_Error"} <= set(row)
        assert not ocf_manager._retry_replica_after_a_gap(rows)
        assert not (tmp_path / "replica-retried").exists()
        # The same row with the gap's error: the agent restarts the IO thread (it starts, and keeps
        # trying the unreachable address, which is what START SLAVE IO_THREAD does).
        gap = [dict(row, Last_IO_Errno="1236", Last_IO_Error="Got fatal error 1236 from master when reading "
                    "data from binary log: 'Error: connecting slave requested to start from GTID 1-10-301, "
                    "which is not in the master's binlog'")]
        assert ocf_manager._retry_replica_after_a_gap(gap)
        running = ocf_manager.parse_rows(ocf_manager._sql("SHOW SLAVE STATUS", names=True))[0]
        assert running["Slave_IO_Running"] in ("Connecting", "Yes"), running["Last_IO_Error"]
    finally:
        ocf_manager._sql("STOP SLAVE")
        ocf_manager._sql("RESET SLAVE ALL")
