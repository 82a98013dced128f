#!/bin/sh
# announces more than it sends: its head and a part go out, then it ends
printf 'Content-Length: 1000000\r\nContent-Type: application/octet-stream\r\n\r\n'
head -c 300000 /dev/zero
sleep 0.3
