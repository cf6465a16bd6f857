"""ocf:appliance:manager restarts a replica the peer could not serve yet after a cold start, and
nothing else: seen on the VM lab's reboot-both, where the peer had lost its binlog's tail."""
from __future__ import annotations

import os

from appliance.ha import ocf_manager

GAP = ("Got fatal error 1236 from master when reading data from binary log: 'Error: connecting slave requested "
       "to start from GTID 1-10-301, which is not in the master's binlog'")
PURGED = ("Got fatal error 1236 from master when reading data from binary log: 'Could not find GTID state "
          "requested by slave in any binlog files. Probably the slave state is too old and required binlog "
          "files have been purged.'")


def _header_and_row(**values) -> str:
    row = {"Slave_IO_State": "", "Master_Host": "10.250.0.2", "Slave_IO_Running": "No",
           "Slave_SQL_Running": "Yes", "Last_IO_Errno": "0", "Last_IO_Error": ""} | values
    return "\t".join(row) + "\n" + "\t".join(row.values()) + "\n"


def _rig(monkeypatch, tmp_path):
    ran: list[str] = []
    monkeypatch.setattr(ocf_manager, "REPLICA_RETRIED", tmp_path / "run" / "replica-retried")
    monkeypatch.setattr(ocf_manager, "_sql", lambda statement, names=False: ran.append(statement) or "")
    return ran


def test_the_gap_after_a_cold_start_restarts_the_io_thread_at_most_every_30_s(monkeypatch, tmp_path):
    ran = _rig(monkeypatch, tmp_path)
    rows = ocf_manager.parse_rows(_header_and_row(Last_IO_Errno="1236", Last_IO_Error=GAP))
    assert rows[0]["Last_IO_Error"] == GAP
    clock = [1000.0]
    assert ocf_manager._retry_replica_after_a_gap(rows, now=lambda: clock[0])
    assert ran == ["START SLAVE IO_THREAD"]
    stamp = tmp_path / "run" / "replica-retried"
    os.utime(stamp, (1000.0, 1000.0))
    clock[0] = 1020.0  # the next monitors, 20 s later: not yet
    assert not ocf_manager._retry_replica_after_a_gap(rows, now=lambda: clock[0])
    clock[0] = 1031.0
    assert ocf_manager._retry_replica_after_a_gap(rows, now=lambda: clock[0])
    assert ran == ["START SLAVE IO_THREAD"] * 2


def test_other_replica_states_are_left_for_status_and_the_runbook(monkeypatch, tmp_path):
    ran = _rig(monkeypatch, tmp_path)
    for text in (_header_and_row(Last_IO_Errno="1236", Last_IO_Error=PURGED),  # purged: a rebuild
                 _header_and_row(Slave_IO_Running="Yes"),
                 _header_and_row(Slave_IO_Running="Connecting", Last_IO_Errno="2003", Last_IO_Error="refused"),
                 _header_and_row(Slave_IO_Running="No", Last_IO_Errno="1045", Last_IO_Error="Access denied"),
                 ""):  # not a replica at all
        assert not ocf_manager._retry_replica_after_a_gap(ocf_manager.parse_rows(text))
    assert ran == []
