"""Ansible stdout callback for ``mailstack apply``: one JSON object per line, per event.

Every line starts with ``@@mailstack `` followed by JSON, so that anything else that reaches
stdout can be told apart. ``mailstack/apply.py`` reads these lines while the playbook runs.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: events
    type: stdout
    short_description: JSON lines for mailstack apply
    description:
      - One JSON object per event (play, task, result per host and loop item, recap), each line
        prefixed with C(@@mailstack ).
"""

import difflib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402

PREFIX = "@@mailstack "
_TEXT_LIMIT = 4000
_DIFF_LIMIT = 20000


def _text(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = "\n".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= _TEXT_LIMIT else "..." + text[-_TEXT_LIMIT:]


def _hidden():
    """Paths whose diffs never leave Ansible: the secret files (MAILSTACK_HIDE_DIFFS, JSON)."""
    try:
        return set(json.loads(os.environ.get("MAILSTACK_HIDE_DIFFS") or "[]"))
    except ValueError:
        return set()


def _diff_text(diff):
    """Ansible's diff result (a dict or a list of them) as one unified diff text."""
    if not diff:
        return ""
    parts = []
    for d in diff if isinstance(diff, list) else [diff]:
        if not isinstance(d, dict):
            continue
        if d.get("prepared"):
            parts.append(str(d["prepared"]))
        elif "before" in d or "after" in d:
            before, after = d.get("before", ""), d.get("after", "")
            if not isinstance(before, str) or not isinstance(after, str):
                before = json.dumps(before, indent=1, sort_keys=True, default=str)
                after = json.dumps(after, indent=1, sort_keys=True, default=str)
            parts.append("".join(difflib.unified_diff(
                before.splitlines(True), after.splitlines(True),
                d.get("before_header", "before"), d.get("after_header", "after"))))
    text = "\n".join(p for p in parts if p.strip())
    return text if len(text) <= _DIFF_LIMIT else text[:_DIFF_LIMIT] + "\n... (diff cut)"


def _in_rescued_block(task):
    """True when ``task`` lies in the ``block:`` part of a block that has a ``rescue:``: its
    failure is handled there (the rescue names the cause), not the host's final failure."""
    child, parent = task, getattr(task, "_parent", None)
    while parent is not None:
        if parent.__class__.__name__ == "Block" and getattr(parent, "rescue", None):
            ids = {getattr(t, "_uuid", None) for t in getattr(parent, "block", None) or ()}
            if getattr(child, "_uuid", None) in ids:
                return True
        child, parent = parent, getattr(parent, "_parent", None)
    return False


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "mailstack.mail.events"

    def _emit(self, event, **data):
        data["event"] = event
        sys.stdout.write(PREFIX + json.dumps(data, default=str, sort_keys=True) + "\n")
        sys.stdout.flush()

    @staticmethod
    def _task(task):
        role = task._role.get_name() if getattr(task, "_role", None) else ""
        name = (task.name or task.action or "").strip()
        return {"task": name, "role": role, "action": task.action}

    def _result(self, event, result, **extra):
        res = result._result
        data = self._task(result._task)
        data.update(host=result._host.get_name(), changed=bool(res.get("changed")), **extra)
        if "item" in res or "_ansible_item_label" in res:
            label = res.get("_ansible_item_label", res.get("item"))
            data["item"] = label if isinstance(label, str) else json.dumps(label, default=str)
        for key in ("msg", "stderr", "stdout", "rc", "module_stderr", "exception"):
            if res.get(key) not in (None, ""):
                data[key] = res[key] if key == "rc" else _text(res[key])
        diff = _diff_text(res.get("diff"))
        if diff:
            data["diff"] = "(secret: diff hidden)" if data.get("item") in _hidden() else diff
        if res.get("mailstack_reconciled"):
            data["reconciled"] = [[str(a), str(w)] for a, w in res["mailstack_reconciled"]]
        if res.get("warnings"):
            data["warnings"] = [_text(w) for w in res["warnings"]]
        if res.get("results") and event in ("failed", "unreachable"):
            data["failed_items"] = [
                {"item": _text(r.get("_ansible_item_label", r.get("item"))),
                 "msg": _text(r.get("msg") or r.get("stderr"))}
                for r in res["results"]
                if isinstance(r, dict) and (r.get("failed") or r.get("unreachable"))]
        self._emit(event, **data)

    # -- playbook structure ------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self._emit("playbook", file=str(playbook._file_name))

    def v2_playbook_on_play_start(self, play):
        self._emit("play", name=play.get_name().strip())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit("task", **self._task(task))

    def v2_playbook_on_handler_task_start(self, task):
        self._emit("task", handler=True, **self._task(task))

    def v2_playbook_on_no_hosts_matched(self):
        self._emit("no_hosts")

    # -- results -----------------------------------------------------------------------
    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result, ignored=bool(ignore_errors),
                     rescued=_in_rescued_block(result._task))

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_runner_item_on_ok(self, result):
        self._result("item_ok", result)

    def v2_runner_item_on_failed(self, result):
        self._result("item_failed", result)

    def v2_runner_item_on_skipped(self, result):
        pass  # the loop's own result says enough

    def v2_runner_on_async_failed(self, result):
        self._result("failed", result, ignored=False)

    # -- the end -----------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for host in sorted(stats.processed):
            summary = stats.summarize(host)
            hosts[host] = {key: int(summary.get(key, 0)) for key in (
                "ok", "changed", "unreachable", "failures", "skipped", "rescued", "ignored")}
        self._emit("stats", hosts=hosts)
