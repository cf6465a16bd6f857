"""High availability: CIB model, corosync/heartbeat configs, DRBD resources, LSB scripts."""
