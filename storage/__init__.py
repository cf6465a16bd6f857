"""Datastore backends and the storage exports of the frontend pair: pure command and config builders."""
