#!/bin/sh
# a head and 256 KiB, then nothing: the answer is streaming when the timeout comes
printf 'Content-Type: application/octet-stream\r\n\r\n'
head -c 262144 /dev/zero
sleep 30
