"""Answers with what it read on stdin: its length, its sha256, and the CGI framing."""
import hashlib
import os
import sys

data = sys.stdin.buffer.read()
sys.stdout.write("Content-Type: text/plain\r\n\r\n"
                 f"method={os.environ['REQUEST_METHOD']} "
                 f"content-length={os.environ.get('CONTENT_LENGTH')} read={len(data)}\n"
                 f"{hashlib.sha256(data).hexdigest()}\n")
