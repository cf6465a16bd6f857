"""The VM lifecycle as data: what each user action does from each state. Pure.

Actions only persist intent (a new, usually transient, state); the controller then performs the
side effect of each transient state and moves on. So every transition is in the database before
its side effect starts, and a restarted manager resumes exactly where it stopped.

    PENDING --schedule/deploy--> PROLOG --disks ready--> BOOT --domain up--> RUNNING
    RUNNING --shutdown--> SHUTDOWN(done) --> EPILOG(done) --> DONE
    RUNNING --poweroff--> SHUTDOWN(poweroff) --> POWEROFF --resume--> BOOT
    RUNNING --suspend--> SHUTDOWN(suspend) --> SUSPENDED --resume--> BOOT
    RUNNING --stop--> SHUTDOWN(stop) --> EPILOG(stop) --> STOPPED --resume--> PENDING
    RUNNING --migrate--> MIGRATE --> RUNNING (on the target)
    any --resubmit--> EPILOG(resubmit) --> PENDING ;  any --delete--> EPILOG(done) --> DONE
    a failed side effect --> FAILED ; recover --success | --failure | --retry
"""
from __future__ import annotations

from .entities import VM, VmState as S
from .errors import CoreError

_NOT_DONE = [s for s in vars(S).values() if isinstance(s, str) and s != S.DONE]

# action -> {from state: (to state, intent)}
ACTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "hold": {S.PENDING: (S.HOLD, "")},
    "release": {S.HOLD: (S.PENDING, "")},
    "deploy": {S.PENDING: (S.PROLOG, ""), S.HOLD: (S.PROLOG, "")},
    "shutdown": {S.RUNNING: (S.SHUTDOWN, "done")},
    "poweroff": {S.RUNNING: (S.SHUTDOWN, "poweroff"), S.SUSPENDED: (S.SHUTDOWN, "poweroff")},
    "suspend": {S.RUNNING: (S.SHUTDOWN, "suspend")},
    "resume": {S.SUSPENDED: (S.BOOT, ""), S.POWEROFF: (S.BOOT, ""), S.STOPPED: (S.PENDING, ""),
               S.UNKNOWN: (S.BOOT, "")},
    "stop": {S.RUNNING: (S.SHUTDOWN, "stop"), S.SUSPENDED: (S.SHUTDOWN, "stop"), S.POWEROFF: (S.EPILOG, "stop")},
    "migrate": {S.RUNNING: (S.MIGRATE, "")},
    "resubmit": {s: (S.EPILOG, "resubmit") for s in _NOT_DONE},
    "delete": {s: (S.EPILOG, "done") for s in _NOT_DONE},
}
RECOVER_FROM = frozenset({S.FAILED, S.UNKNOWN, S.PROLOG, S.BOOT, S.SHUTDOWN, S.EPILOG, S.MIGRATE})
RECOVER_HOW = ("success", "failure", "retry")

# Where a step leads when it succeeds, by (transient state, intent).
NEXT = {
    (S.PROLOG, ""): (S.BOOT, ""),
    (S.BOOT, ""): (S.RUNNING, ""),
    (S.SHUTDOWN, "done"): (S.EPILOG, "done"),
    (S.SHUTDOWN, "poweroff"): (S.POWEROFF, ""),
    (S.SHUTDOWN, "suspend"): (S.SUSPENDED, ""),
    (S.SHUTDOWN, "stop"): (S.EPILOG, "stop"),
    (S.EPILOG, "done"): (S.DONE, ""),
    (S.EPILOG, "stop"): (S.STOPPED, ""),
    (S.EPILOG, "resubmit"): (S.PENDING, ""),
    (S.MIGRATE, ""): (S.RUNNING, ""),
}
# Where `recover --failure` leaves a VM: as if the step had failed cleanly.
ON_FAILURE = {
    S.PROLOG: (S.EPILOG, "resubmit"),  # clean partial disks, schedule again
    S.BOOT: (S.POWEROFF, ""),
    S.SHUTDOWN: (S.RUNNING, ""),
    S.EPILOG: (S.POWEROFF, ""),
    S.MIGRATE: (S.RUNNING, ""),  # still on the source host
    S.UNKNOWN: (S.POWEROFF, ""),
}


def action_target(vm: VM, action: str) -> tuple[str, str]:
    """(state, intent) the action moves the VM to, or a STATE_INVALID error naming what is allowed."""
    if action not in ACTIONS:
        raise CoreError("VALUE_INVALID", f"unknown action {action!r}", allowed=sorted(ACTIONS) + ["recover"])
    table = ACTIONS[action]
    if vm.state not in table:
        raise CoreError("STATE_INVALID", f"cannot {action} VM {vm.id} in state {vm.state}", state=vm.state,
                        allowed_from=sorted(table))
    return table[vm.state]


def recover_target(vm: VM, how: str) -> tuple[str, str]:
    if how not in RECOVER_HOW:
        raise CoreError("VALUE_INVALID", f"recover takes one of {RECOVER_HOW}", value=how)
    if vm.state not in RECOVER_FROM:
        raise CoreError("STATE_INVALID", f"cannot recover VM {vm.id} in state {vm.state}", state=vm.state,
                        allowed_from=sorted(RECOVER_FROM))
    where = vm.failed_in if vm.state == S.FAILED else vm.state
    if where == S.UNKNOWN:
        return {"success": (S.RUNNING, ""), "failure": ON_FAILURE[S.UNKNOWN], "retry": (S.BOOT, "")}[how]
    if how == "retry":
        return where, vm.intent
    if how == "failure":
        return ON_FAILURE[where]
    return NEXT[(where, vm.intent)]


def enter(vm: VM, state: str, intent: str = "") -> None:
    """Move a VM to a state, clearing what that state does not hold."""
    vm.state, vm.intent = state, intent
    if state != S.FAILED:
        vm.failed_in, vm.error = "", ""
    if state in (S.DONE, S.STOPPED, S.PENDING, S.HOLD):
        vm.host_id = None
        vm.target_host_id = None
    if state in (S.DONE,) or (state == S.PENDING and intent == "" and vm.datastore_id is not None
                              and not any(d.get("path") for d in vm.disks)):
        vm.datastore_id = None
