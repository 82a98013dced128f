#!/bin/sh
printf 'Content-Type: text/plain\nStatus: 201\n\ncreated with bare newlines\n'
