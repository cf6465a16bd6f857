"""Provisioning roles, in dependency order. Each one turns a Site into a RolePlan."""
