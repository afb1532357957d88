"""Submit one message on port 587 (STARTTLS, login) and print what smtplib answers.

Run in the lab's client container as ``python3 -c TEXT`` with a JSON job on stdin:
{"ca", "host", "login", "pw", "from", "to", "token"}.

A real file (linted like the rest) that mailstack.verify sends as the ``-c`` text.
"""
import json
import smtplib
import ssl
import sys

job = json.load(sys.stdin)
ctx = ssl.create_default_context(cadata=job["ca"])
s = smtplib.SMTP(job["host"], 587, timeout=20)
s.ehlo("client.example.test")
s.starttls(context=ctx)
s.ehlo("client.example.test")
s.login(job["login"], job["pw"])
msg = (f"From: {job['from']}\r\nTo: {job['to']}\r\nSubject: mailstack verify {job['token']}"
       f"\r\n\r\n{job['token']}\r\n")
print(s.sendmail(job["from"], [job["to"]], msg))
s.quit()
