#!/bin/sh
echo "first line to stderr" >&2
printf 'second line to stderr\n' >&2
printf 'Content-Type: text/plain\r\n\r\nok\n'
