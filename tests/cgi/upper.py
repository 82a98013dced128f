"""Switches protocols (Status: 101, Upgrade: upper) and sends back upper-cased what
it reads on stdin, each piece as soon as it has it; X-Asked tells the Upgrade it saw."""
import os

asked = os.environ.get("HTTP_UPGRADE", "none") + "/" + os.environ.get("HTTP_CONNECTION", "none")
os.write(1, b"Status: 101\r\nUpgrade: upper\r\nConnection: upgrade\r\nX-Asked: "
         + asked.encode() + b"\r\n\r\n")
while True:
    data = os.read(0, 65536)
    if not data:
        break
    os.write(1, data.upper())
