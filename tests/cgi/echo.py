"""Sends back what it reads on stdin, each piece as soon as it has it."""
import os
import sys

out = sys.stdout.buffer
out.write(b"Content-Type: application/octet-stream\r\n\r\n")
out.flush()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    out.write(data)
    out.flush()
