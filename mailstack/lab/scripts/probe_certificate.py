"""Wait until Postfix on 127.0.0.1:PORT serves the certificate with the given SHA-256.

Run in a stand-in container as ``python3 -c TEXT PORT WRAPPER SHA256``.

A real file (linted like the rest) that mailstack.lab sends as the ``-c`` text.
"""
import hashlib
import smtplib
import ssl
import sys
import time

port, wrapper, want = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
deadline = time.monotonic() + 15
last = "no answer"
while True:
    try:
        s: smtplib.SMTP
        if wrapper:
            s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=5)
        else:
            s = smtplib.SMTP("127.0.0.1", port, timeout=5)
            s.starttls(context=ctx)
        assert isinstance(s.sock, ssl.SSLSocket)
        der = s.sock.getpeercert(binary_form=True) or b""
        s.quit()
        got = hashlib.sha256(der).hexdigest()
        if got == want:
            sys.exit(0)
        last = "it presents " + got
    except (OSError, smtplib.SMTPException) as err:
        last = str(err)
    if time.monotonic() > deadline:
        sys.exit(f"port {port} does not present certificate {want}: {last}")
    time.sleep(0.2)
