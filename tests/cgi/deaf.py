"""Switches protocols (Status: 101, Upgrade: deaf), then never reads its stdin: only a
signal ends it before its minute is up."""
import os
import time

os.write(1, b"Status: 101\r\nUpgrade: deaf\r\n\r\n")
time.sleep(60)
