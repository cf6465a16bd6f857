"""A MariaDB connection that the server dropped (crash, restart, failover behind the VIP) is
replaced on the next transaction, however busy the thread is."""
from __future__ import annotations

import pymysql
import pytest


def test_the_transaction_after_a_dropped_connection_succeeds(mariadb):
    db = mariadb.database()
    with db.transaction() as tx:
        connection_id = tx.execute("SELECT CONNECTION_ID()").one()[0]
    admin = pymysql.connect(unix_socket=mariadb.socket, user="root", password="", autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f"KILL CONNECTION {int(connection_id)}")
    admin.close()
    with pytest.raises(pymysql.err.Error):  # the request in flight when the server went away fails
        with db.transaction() as tx:
            tx.execute("SELECT 1")
    # the very next one (no idle time for a ping) gets a new connection
    with db.transaction() as tx:
        assert tx.execute("SELECT 1").one() == (1,)
        assert tx.execute("SELECT CONNECTION_ID()").one()[0] != connection_id
