"""The Ceph lab removes only what it made: `up` and `down` on a directory of someone else's files
touch nothing (no Ceph needed: both refuse before any command)."""
from __future__ import annotations

import pytest

from appliance.lab import ceph


def test_up_refuses_and_down_ignores_a_directory_the_lab_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("an operator's file\n")
    (tmp_path / "osd.0.pid").write_text("1\n")  # a pid file alone proves nothing
    with pytest.raises(RuntimeError, match="did not make"):
        ceph.up(tmp_path)
    ceph.down(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "osd.0.pid"]


def test_down_removes_a_lab_it_made(tmp_path):
    (tmp_path / "ceph.conf").write_text(ceph.conf_text(tmp_path, "fsid", 1, 2))
    (tmp_path / "monitors").write_text("127.0.0.1:2\n")
    (tmp_path / "log").mkdir()
    ceph.down(tmp_path)
    assert list(tmp_path.iterdir()) == []
