"""Users, groups and API tokens.

A token is shown once, at creation; only its SHA-256 is stored. Tokens are named, may expire, and
are listed and revoked per user. Each user has one role (core/authz.py) and one group.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Any

from .. import authz
from ..authz import Actor
from ..entities import Group, User
from ..errors import CoreError, not_found
from . import Env, values

DEFAULT_GROUP = "users"
ADMIN_GROUP = "admins"
DEFAULT_TOKEN_LIFETIME = 90 * 24 * 3600.0  # seconds; 0 asks for a token that never expires (admins)
MAX_TOKEN_LIFETIME = 10 * 365 * 24 * 3600.0
MAX_USER_TOKEN_LIFETIME = 365 * 24 * 3600.0  # a leaked user token dies within a year, whatever it minted
MAX_LIVE_TOKENS = 100  # per user: a flood of tokens is refused
USED_EVERY = 60.0  # last_used_at is written at most this often per token (a write per request costs)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "user_id", "name", "created_at", "expires_at", "revoked_at", "last_used_at")}


class Users:
    def __init__(self, env: Env):
        self.env = env

    # -- groups ----------------------------------------------------------------------------------
    def create_group(self, actor: Actor, name: str) -> Group:
        with self.env.store.transaction() as tx:
            return self.env.store.groups.insert(tx, Group(name=values.name(name)))

    def _group_named(self, tx: Any, name: str, create: bool) -> Group:
        found = self.env.store.groups.where(tx, "name = ?", (name,))
        if found:
            return found[0]
        if not create:
            raise CoreError("NOT_FOUND", f"group {name} does not exist; create it first", kind="group", name=name)
        return self.env.store.groups.insert(tx, Group(name=name))

    def page_groups(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        with self.env.store.read() as tx:
            return self.env.store.groups.page(tx, after, limit)

    def delete_group(self, actor: Actor, ident: int) -> None:
        with self.env.store.transaction() as tx:
            group = self.env.store.groups.require(tx, ident)
            members = [u.id for u in self.env.store.users.where(tx, "group_id = ?", (ident,))]
            if members:
                raise CoreError("IN_USE", f"group {group.name} has users", users=members)
            self.env.store.groups.delete(tx, ident)

    # -- users -----------------------------------------------------------------------------------
    def create(self, actor: Actor, name: str, role: str = authz.USER, group: str | None = None,
               token_name: str = "initial", token: str | None = None) -> tuple[User, str, int]:
        """The user, its first token (shown once) and that token's id. The token never expires.
        `token`: a secret made by the caller (start-up writes the admin's to its file first)."""
        if role not in authz.ROLES:
            raise CoreError("VALUE_INVALID", f"role {role!r} is not one of {authz.ROLES}", field="role", value=role)
        values.name(name)
        group_name = values.name(group, "group") if group is not None else \
            (ADMIN_GROUP if role == authz.ADMIN else DEFAULT_GROUP)
        token = token or secrets.token_urlsafe(32)
        with self.env.store.transaction() as tx:
            group_row = self._group_named(tx, group_name, create=group is None)
            user = self.env.store.users.insert(tx, User(name=name, role=role, group_id=group_row.id))
            token_id = self.env.store.tokens.insert(tx, user.id, token_name, token_hash(token), self.env.wall(), None)
        return user, token, token_id

    def get(self, actor: Actor, ident: int) -> User:
        with self.env.store.read() as tx:
            return self.env.store.users.require(tx, ident)

    def page(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        with self.env.store.read() as tx:
            return self.env.store.users.page(tx, after, limit)

    def delete(self, actor: Actor, ident: int) -> None:
        """Refused while the user owns VMs or images, and for the last administrator."""
        with self.env.store.transaction() as tx:
            user = self.env.store.users.require(tx, ident)
            vms = self.env.store.vms.live_count_of_owner(tx, ident)
            images = len(self.env.store.images.where(tx, "owner_id = ?", (ident,)))
            if vms or images:
                raise CoreError("IN_USE", f"user {user.name} owns {vms} VM(s) and {images} image(s)", vms=vms,
                                images=images)
            if user.role == authz.ADMIN and len(self.env.store.users.where(tx, "role = ?", (authz.ADMIN,))) == 1:
                raise CoreError("IN_USE", f"user {user.name} is the last administrator", user_id=ident)
            self.env.store.tokens.revoke_user(tx, ident, self.env.wall())
            self.env.store.users.delete(tx, ident)

    def has_users(self) -> bool:
        with self.env.store.read() as tx:
            return tx.execute("SELECT COUNT(*) FROM users").one()[0] > 0

    # -- tokens ----------------------------------------------------------------------------------
    def authenticate(self, token: str) -> Actor | None:
        """The actor a token acts for; None when it is unknown, revoked, expired or its user is gone."""
        now = self.env.wall()
        with self.env.store.read() as tx:
            row = self.env.store.tokens.by_hash(tx, token_hash(token))
            if row is None or row["revoked_at"] is not None or (row["expires_at"] is not None
                                                                 and row["expires_at"] <= now):
                return None
            user = self.env.store.users.get(tx, row["user_id"])
        if user is None:
            return None
        if row["last_used_at"] is None or now - row["last_used_at"] >= USED_EVERY:
            with self.env.store.transaction() as tx:
                self.env.store.tokens.used(tx, row["id"], now)
        return Actor(user.id, user.name, user.role, user.group_id)

    def create_token(self, actor: Actor, name: str, expires_in: float | None = None,
                     user_id: int | None = None) -> tuple[dict[str, Any], str]:
        """A new token for the actor (an administrator may make one for any user); (row, secret)."""
        owner = actor.user_id if user_id is None else user_id
        if owner != actor.user_id and not actor.admin:
            raise CoreError("FORBIDDEN", "only an administrator may create tokens for another user", user_id=owner)
        lifetime = DEFAULT_TOKEN_LIFETIME if expires_in is None else float(expires_in)
        longest = MAX_TOKEN_LIFETIME if actor.admin else MAX_USER_TOKEN_LIFETIME
        if lifetime < 0 or lifetime > longest or (lifetime == 0 and not actor.admin):
            raise CoreError("VALUE_INVALID", f"expires_in must be 1 to {int(longest)} seconds"
                            + (" (or 0: never)" if actor.admin else ""), field="expires_in", value=expires_in)
        secret = secrets.token_urlsafe(32)
        now = self.env.wall()
        with self.env.store.transaction() as tx:
            if self.env.store.users.get(tx, owner) is None:
                raise not_found("user", owner)
            live = tx.execute("SELECT COUNT(*) FROM tokens WHERE user_id = ? AND revoked_at IS NULL AND "
                              "(expires_at IS NULL OR expires_at > ?)", (owner, now)).one()[0]
            if live >= MAX_LIVE_TOKENS:
                raise CoreError("IN_USE", f"user {owner} has {live} live tokens; revoke some first", count=live)
            ident = self.env.store.tokens.insert(tx, owner, values.name(name), token_hash(secret), now,
                                                 None if lifetime == 0 else now + lifetime)
            row = self.env.store.tokens.get(tx, ident)
        return token_view(row), secret

    def page_tokens(self, actor: Actor, after: int, limit: int,
                    user_id: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        if not actor.sees_all:
            if user_id not in (None, actor.user_id):
                raise CoreError("FORBIDDEN", "only administrators and auditors list other users' tokens",
                                user_id=user_id)
            user_id = actor.user_id
        with self.env.store.read() as tx:
            rows, cursor = self.env.store.tokens.page(tx, after, limit, user_id)
        return [token_view(r) for r in rows], cursor

    def revoke_token(self, actor: Actor, ident: int) -> None:
        with self.env.store.transaction() as tx:
            row = self.env.store.tokens.get(tx, ident)
            if row is None or (row["user_id"] != actor.user_id and not actor.admin):
                raise not_found("token", ident)
            self.env.store.tokens.revoke(tx, ident, self.env.wall())
