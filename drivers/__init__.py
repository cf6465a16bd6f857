"""Hypervisor drivers (libvirt, fake) and host monitoring probes."""
