"""Answers with its environment, one VARIABLE=value per line, sorted."""
import os
import sys

lines = "".join(f"{key}={value}\n" for key, value in sorted(os.environ.items()))
sys.stdout.write("Content-Type: text/plain\r\n\r\n" + lines + "cwd=" + os.getcwd() + "\n")
