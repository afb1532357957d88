"""Send a run of messages on port 25 and report which ones the server acknowledged with 250.

Run in the lab's client container as ``python3 -c TEXT`` with a JSON job on stdin:
{"host", "from", "to": [addresses, used in turn], "count", "run", "per_connection", "rate"}
(rate: at most that many messages per second, 0 for as fast as it goes).

Each message has the Message-ID ``<RUN.I@faults.lab.test>`` and is tried once: a message counts
as acknowledged only when the server answered 250 to its end of data. A refused connection, a
dropped one or any other answer is recorded and the next message goes on a new connection (after
a short pause), so a run spans a daemon's restart. Prints ``sent N`` after every message (the
test times a restart by it), then one JSON line: {"acked", "answers": {id: the 250's text},
"refused": {id: answer}, "seconds"}.
"""
import contextlib
import json
import smtplib
import sys
import time

job = json.load(sys.stdin)
acked: list[str] = []
answers: dict[str, str] = {}
refused: dict[str, str] = {}
conn: smtplib.SMTP | None = None
on_conn = 0
started = time.monotonic()


def drop() -> None:
    global conn
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()
    conn = None


for i in range(job["count"]):
    if job.get("rate"):
        time.sleep(max(0.0, started + i / job["rate"] - time.monotonic()))
    mid = f"<{job['run']}.{i}@faults.lab.test>"
    to = job["to"][i % len(job["to"])]
    text = (f"From: {job['from']}\r\nTo: {to}\r\nSubject: fault run {job['run']} {i}\r\n"
            f"Message-ID: {mid}\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}"
            f"\r\n\r\nmessage {i} of run {job['run']}\r\n")
    try:
        if conn is None:
            conn = smtplib.SMTP(job["host"], 25, timeout=30, local_hostname="client.lab.test")
            conn.ehlo()
            on_conn = 0
        code, answer = conn.mail(job["from"])
        if code == 250:
            code, answer = conn.rcpt(to)
        if code != 250:
            refused[mid] = f"{code} {answer.decode(errors='replace')}"
            conn.rset()
        else:
            code, answer = conn.data(text)  # smtplib raises only when DATA itself is refused
            if code != 250:
                raise smtplib.SMTPDataError(code, answer)
            acked.append(mid)
            answers[mid] = answer.decode(errors="replace")
            on_conn += 1
            if on_conn >= job.get("per_connection", 20):
                conn.quit()
                drop()
    except smtplib.SMTPResponseException as err:
        refused[mid] = f"{err.smtp_code} {err.smtp_error.decode(errors='replace')}"
        drop()
    except (smtplib.SMTPException, OSError) as err:
        refused[mid] = f"{type(err).__name__}: {err}"
        drop()
        time.sleep(0.2)
    print(f"sent {i + 1}", flush=True)
if conn is not None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        conn.quit()
print(json.dumps({"acked": acked, "answers": answers, "refused": refused,
                  "seconds": time.monotonic() - started}), flush=True)
