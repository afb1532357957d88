"""IMAP logins over TLS for a while, from several processes; run in the lab's client.

``python3 -c TEXT`` with a JSON job on stdin: {"host", "seconds", "workers", "users": [[user,
password]], "ca": PEM}. Each process connects to port 993 (the site's CA trusted), logs in as
the next user and logs out, again and again until the time is up. Prints one JSON line:
{"logins", "failed", "seconds", "rate"}.
"""
import imaplib
import json
import multiprocessing
import ssl
import sys
import time

job = json.load(sys.stdin)


def worker(index, queue):
    ctx = ssl.create_default_context(cadata=job["ca"])
    ctx.check_hostname = False
    done = failed = 0
    users = job["users"]
    deadline = time.monotonic() + job["seconds"]
    while time.monotonic() < deadline:
        user, password = users[(index + done + failed) % len(users)]
        try:
            imap = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=30)
            imap.login(user, password)
            imap.logout()
            done += 1
        except Exception as exc:  # counted and reported: a bench, not a test
            failed += 1
            if failed == 1:
                print(f"{user}: {exc!r}", file=sys.stderr)
    queue.put((done, failed))


queue = multiprocessing.Queue()
started = time.monotonic()
procs = [multiprocessing.Process(target=worker, args=(i, queue)) for i in range(job["workers"])]
for p in procs:
    p.start()
results = [queue.get() for _ in procs]
for p in procs:
    p.join()
seconds = time.monotonic() - started
logins = sum(r[0] for r in results)
print(json.dumps({"logins": logins, "failed": sum(r[1] for r in results), "seconds": seconds,
                  "rate": logins / seconds}))
